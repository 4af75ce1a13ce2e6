// The test bed as tests see it: a serialisable description of the real components that
// test/support/global-setup.ts starts once per `npm test` run. In a test: `inject("testbed")`
// (or `testbed()` from test/support/kube.ts).

export interface TestBed {
  /** Unique per run, e.g. 20251121-114200-1234. */
  runId: string;
  /** `.testbed/<runId>/`: one `<component>.log` per component; kept after the run. */
  logDir: string;
  /** Temporary state (etcd data, registry storage, git repos, certificates); removed after the run. */
  stateDir: string;
  /** A scratch directory tests may use (under stateDir). */
  tmpDir: string;
  kube: {
    /** e.g. "1.34.4". */
    version: string;
    /** Directory with kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl. */
    binDir: string;
    /** `${binDir}/kubectl`. */
    kubectl: string;
    /** Helm (scripts/build-helm.sh), for rendering the chart exactly as users install it. */
    helm: string;
    /** Admin kubeconfig (system:masters, client certificate; all data embedded). */
    kubeconfig: string;
    /** e.g. https://127.0.0.1:PORT */
    server: string;
    /** Cluster CA (PEM) that signed the serving and client certificates. */
    caFile: string;
    /** Admin client certificate and key (PEM), group system:masters. */
    certFile: string;
    keyFile: string;
    /** A static bearer token in system:masters (for fetch/curl: `Authorization: Bearer ...`). */
    token: string;
    /** Service-account token issuer and the public key that verifies its tokens. */
    serviceAccountIssuer: string;
    serviceAccountPublicKeyFile: string;
    etcdUrl: string;
    /** The API server's audit log of writes (JSON lines; read with test/support/audit-log.ts). */
    auditLogFile: string;
    /** The cluster PKI (test/support/kube-apiserver.ts makeKubePki), e.g. to start a second API server on the same etcd. */
    pkiDir: string;
  };
  registry: {
    /** Plain HTTP, no auth. */
    plain: PlainRegistry;
    /** HTTPS (certificate from a test CA, SAN IP:127.0.0.1) with htpasswd basic auth. */
    tls: TlsRegistry;
  };
  git: {
    /** e.g. http://127.0.0.1:PORT; a repo `<name>.git` under `root` is `${baseUrl}/<name>.git`. */
    baseUrl: string;
    /** Directory of bare repositories served over smart HTTP (fetch and push). */
    root: string;
  };
  nix: {
    /** Merge into every nix command's env: NIX_CONF_DIR, NIX_USER_CONF_FILES, NIX_CONFIG, XDG_CACHE_HOME. */
    env: Record<string, string>;
    confFile: string;
    /** e.g. "2.8.0". */
    version: string;
    /** e.g. "x86_64-linux". */
    system: string;
  };
}

interface PlainRegistry {
  /** "127.0.0.1:PORT" */
  host: string;
  /** "http://127.0.0.1:PORT" */
  url: string;
  /** Filesystem storage root: blobs in docker/registry/v2/blobs/sha256/<2>/<hex>/data. */
  rootDir: string;
}

interface TlsRegistry {
  host: string;
  /** "https://127.0.0.1:PORT" */
  url: string;
  rootDir: string;
  /** CA (PEM) that signed the registry's certificate. */
  caFile: string;
  /** Directory holding `ca.crt`, for skopeo `--src-cert-dir`/`--dest-cert-dir`. */
  certsDir: string;
  username: string;
  password: string;
  /** A dockerconfigjson file `{"auths":{host:{auth}}}` (skopeo --authfile, Secret data). */
  authFile: string;
}

declare module "vitest" {
  export interface ProvidedContext {
    testbed: TestBed;
  }
}
