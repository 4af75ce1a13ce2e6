// The example app of the e2e suite and the demo: an opted-in Deployment (a placeholder image
// that never becomes ready until the first build) and its NixImage, as YAML for kubectl apply.

export interface WebExample {
  namespace: string;
  imageName: string;
  flakeUrl: string;
  repository: string;
  placeholderImage: string;
  /** A Secret with `cosign.key`: the image and its SBOM/provenance are then signed. */
  signingKeySecret?: string;
  /** spec.triggers.interval; default 30s. */
  interval?: string;
}

export function webDeploymentYaml(o: WebExample): string {
  return `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: ${o.namespace}
  annotations: { niximage.io/from: ${o.imageName} }
spec:
  replicas: 1
  selector: { matchLabels: { app: web } }
  strategy: { type: RollingUpdate, rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } }
  template:
    metadata: { labels: { app: web } }
    spec:
      containers:
        - name: web
          image: ${o.placeholderImage}
          ports: [{ containerPort: 8080 }]
          readinessProbe: { httpGet: { path: /message.txt, port: 8080 }, periodSeconds: 2 }
`;
}

export function webNixImageYaml(o: WebExample): string {
  return `apiVersion: niximage.io/v1alpha1
kind: NixImage
metadata: { name: ${o.imageName}, namespace: ${o.namespace} }
spec:
  flake: ${o.flakeUrl}
  attribute: default
  image:
    repository: ${o.repository}
    config: { exposedPorts: ["8080"] }${
      o.signingKeySecret
        ? `
    attestations: { signingKeySecretRef: { name: ${o.signingKeySecret} } }`
        : ""
    }
  triggers: { interval: ${o.interval ?? "30s"} }
  build: { timeout: 15m }
`;
}
