import { nixImageCrd, nixImageCrdYaml } from "./crd.ts";
import { renderReference } from "./reference-doc.ts";
import { defaultFlakeRefPolicy } from "../flake/flake-ref-policy.ts";

/** Committed files generated from the API schema, by repository path. */
export function generatedFiles(): Record<string, string> {
  const options = { flakeRefPolicy: defaultFlakeRefPolicy };
  const crdYaml = nixImageCrdYaml(options);
  // The CRD object is plain JSON data; the reference reads its schema, the one users get.
  const schema = (nixImageCrd(options) as { spec: { versions: { schema: { openAPIV3Schema: { properties: Record<string, object> } } }[] } }).spec.versions[0]!
    .schema.openAPIV3Schema.properties;
  return {
    "crds/niximages.niximage.io.yaml": crdYaml,
    "charts/nix-image-operator/crds/niximages.niximage.io.yaml": crdYaml,
    "docs/api.md": renderReference(schema.spec!, schema.status!),
  };
}
