// Builds the operator image and the default builder image without Docker, with the same tooling
// the e2e cluster uses (debootstrap + uncompressed layers cached by content), and pushes them with
// the project's own registry client:
//
//   npm run images                                      build (or find cached) and list the layers
//   npm run images -- --push registry.example.com/platform [--ca-file ca.pem] [--plain-http]
//                     [--docker-config ~/.docker/config.json] [--json]
//
// Prints each image's digest and the `helm install --set` lines that use them. Needs root (for
// debootstrap and chroot) and the Debian mirror; `bash scripts/setup.sh --with-e2e` installs the rest.
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { credentialsForHost, parseDockerConfigText, type RegistryCredentials } from "../src/oci/docker-config.ts";
import { buildImages, e2eCacheDir, pushImage, type ImageSpec, type PushedImage } from "../test/e2e/support/images.ts";

const repoRoot = fileURLToPath(new URL("..", import.meta.url));
const usage = `usage: npm run images -- [--push HOST[:PORT]/PREFIX] [--plain-http] [--ca-file FILE] [--docker-config FILE] [--json]`;

const { values } = parseArgs({
  options: {
    push: { type: "string" },
    "plain-http": { type: "boolean", default: false },
    "ca-file": { type: "string" },
    "docker-config": { type: "string" },
    json: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
  strict: true,
});
if (values.help) {
  process.stdout.write(`${usage}\n`);
  process.exit(0);
}

const t0 = Date.now();
const log = (m: string) => process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}\n`);

const built = await buildImages({ repoRoot, log });
const products: [string, ImageSpec][] = [
  ["nix-image-operator", built.operator],
  ["nix-builder", built.builder],
];
for (const [name, image] of products) {
  log(`${name}: ${image.layers.map((l) => `${l.name} ${l.digest.slice(7, 19)} ${(l.size / 1e6).toFixed(1)} MB`).join(" + ")}`);
}
log(`layer cache: ${join(e2eCacheDir(), "layers")}`);

if (values.push) {
  const slash = values.push.indexOf("/");
  const host = slash < 0 ? values.push : values.push.slice(0, slash);
  const prefix = slash < 0 ? "" : values.push.slice(slash + 1).replace(/\/+$/, "");
  const credentials = registryCredentials(host, values["docker-config"]);
  const pushed: Record<string, PushedImage> = {};
  for (const [name, image] of products) {
    const repository = prefix ? `${prefix}/${name}` : name;
    log(`pushing ${host}/${repository}`);
    pushed[name] = await pushImage(host, repository, image, {
      plainHttp: values["plain-http"],
      ...(credentials ? { credentials } : {}),
      ...(values["ca-file"] ? { caFile: values["ca-file"] } : {}),
      tagPrefix: "",
    });
  }
  const operator = pushed["nix-image-operator"]!;
  const builder = pushed["nix-builder"]!;
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ operator, builder }, null, 2)}\n`);
  } else {
    process.stdout.write(
      [
        `operator: ${operator.pinned}`,
        `builder:  ${builder.pinned}`,
        "",
        "Install the chart with these images:",
        "",
        "  helm install nix-image-operator charts/nix-image-operator -n nix-image-operator --create-namespace \\",
        `    --set image.repository=${host}/${operator.repository} --set image.digest=${operator.digest} \\`,
        `    --set config.builder.nixImage=${builder.pinned}`,
        "",
      ].join("\n"),
    );
  }
}

/** Credentials for `host` from a docker config file (--docker-config, else ~/.docker/config.json). */
function registryCredentials(host: string, file: string | undefined): RegistryCredentials | undefined {
  const path = file ?? join(process.env.DOCKER_CONFIG ?? join(homedir(), ".docker"), "config.json");
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    if (file) throw new Error(`cannot read --docker-config ${file}: ${(error as Error).message}`);
    return undefined;
  }
  return credentialsForHost(parseDockerConfigText(text), host);
}
