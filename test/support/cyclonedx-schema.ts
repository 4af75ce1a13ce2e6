// The official CycloneDX 1.6 JSON schema (shipped by the npm package @cyclonedx/cyclonedx-library)
// compiled with ajv, with the SPDX and JSF schemas it references.
import { createRequire } from "node:module";
import { Ajv } from "ajv";
import addFormats from "ajv-formats";

const require = createRequire(import.meta.url);
const schemaDir = require.resolve("@cyclonedx/cyclonedx-library/package.json").replace(/package\.json$/, "res/schema/");

/** A validator returning the schema violations of a document ([] when valid). */
export function cycloneDxValidator(): (doc: unknown) => string[] {
  const ajv = new Ajv({ strict: false, allErrors: true });
  addFormats.default(ajv);
  // The package names the files `*.SNAPSHOT.schema.json` in its $refs but keeps the upstream $ids.
  for (const f of ["spdx.SNAPSHOT.schema.json", "jsf-0.82.SNAPSHOT.schema.json"]) {
    ajv.addSchema({ ...(require(`${schemaDir}${f}`) as object), $id: `http://cyclonedx.org/schema/${f}` });
  }
  const validate = ajv.compile(require(`${schemaDir}bom-1.6.SNAPSHOT.schema.json`) as object);
  return (doc) => (validate(doc) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`));
}
