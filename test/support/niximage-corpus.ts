// The NixImage spec corpus: invalid specs that both the API server (the CRD) and
// `nix-image-operator validate` must reject naming the field, and valid ones that both must accept.
//
// Cases are a table of field -> bad values on one valid base spec, so each case is one readable
// change (`spec.image.tags: 17 tags`); test/fixtures/niximages/invalid/*.yaml adds hand-written
// whole files. The valid side is every NixImage the docs show users plus boundary variations.
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { parseAllDocuments, parse as parseYaml } from "yaml";

const root = join(import.meta.dirname, "../..");
const fixtures = join(root, "test/fixtures/niximages");

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

export interface CorpusCase {
  /** Unique, readable: `<field>: <what is wrong>`. */
  name: string;
  /** The field path both the API server and `validate` must name. */
  field: string;
  object: Json;
}

const baseSpec = () => ({
  flake: "github:acme/shop?ref=main",
  attribute: "web",
  image: { repository: "registry.example.com/acme/web" },
});

const nixImage = (name: string, spec: Json, metadata: Json = {}) => ({
  apiVersion: "niximage.io/v1alpha1",
  kind: "NixImage",
  metadata: { name, ...metadata },
  spec,
});

const remove = Symbol("remove");

/** A copy of `object` with `value` at the dotted `path` (parents created; `remove` deletes it). */
function withValue(object: Json, path: string, value: unknown): Json {
  const copy = structuredClone(object);
  const keys = path.split(".");
  let node = copy;
  for (const key of keys.slice(0, -1)) {
    if (typeof node[key] !== "object" || node[key] === null) node[key] = {};
    node = node[key];
  }
  if (value === remove) delete node[keys.at(-1)!];
  else node[keys.at(-1)!] = value;
  return copy;
}

const long = (n: number, unit = "a") => unit.repeat(Math.ceil(n / unit.length)).slice(0, n);
const list = <T>(n: number, item: (i: number) => T): T[] => Array.from({ length: n }, (_, i) => item(i));
const goodKey = "cache.example.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

/** One bad value of a field: [what is wrong, value, field named when it is not the path itself]. */
type Bad = [label: string, value: unknown, field?: string];

/** Secret/ConfigMap reference objects, each checked at every place the API takes one. */
const badObjectRefs = (path: string): [string, Bad[]][] => [
  [
    path,
    [
      ["a string instead of {name}", "regcred"],
      ["a list", [{ name: "regcred" }]],
      ["without a name", {}, `${path}.name`],
      ["with a namespace (cross-namespace)", { name: "regcred", namespace: "kube-system" }, `${path}.namespace`],
    ],
  ],
  [
    `${path}.name`,
    [
      ["empty", ""],
      ["uppercase", "RegCred"],
      ["with an underscore", "reg_cred"],
      ["a path", "../kube-system/regcred"],
      ["with a slash", "team/regcred"],
      ["leading dash", "-regcred"],
      ["trailing dot", "regcred."],
      ["with a newline", "regcred\nx"],
      ["with a space", "reg cred"],
      ["254 characters", long(254)],
      ["a number", 5],
    ],
  ],
];

const badDurations = (label: string, min: string, max: string, unit: string): Bad[] => [
  [`below ${min}`, unit === "s" ? "1s" : "29s"],
  [`above ${max}`, max === "168h" ? "169h" : "25h"],
  ["in days", "1d"],
  ["without a unit", "300"],
  ["in words", "5 minutes"],
  ["negative", "-5m"],
  ["empty", ""],
  ["a number of seconds", 300],
  ["with a space", "5 m"],
  ["uppercase unit", "5M"],
  ["ISO 8601", "PT5M"],
  [`${label} 33 characters`, `${long(31, "1")}ms`],
];

const badQuantities = (path: string): Bad[] => [
  [`${path}: in words`, "two"],
  [`${path}: GB (not a Kubernetes suffix)`, "4GB"],
  [`${path}: negative`, "-1Gi"],
  [`${path}: with a space`, "4 Gi"],
  [`${path}: a number`, 2],
];

/** field path -> bad values; each becomes one case on the base spec. */
const table: [string, Bad[]][] = [
  [
    "spec",
    [
      ["missing", remove],
      ["a string", "github:acme/shop"],
      ["a list", [baseSpec()]],
    ],
  ],
  // ---- flake: every ref kind, injections, SSRF, oversize
  [
    "spec.flake",
    [
      ["missing", remove],
      ["a number", 42],
      ["a list", ["github:acme/shop"]],
      ["an object", { type: "github", owner: "acme", repo: "shop" }],
      ["null", null],
      ["1025 characters", `github:acme/${long(1013)}`],
      ["only spaces", "   "],
      ["leading space", " github:acme/shop"],
      ["trailing newline", "github:acme/shop\n"],
      ["newline then --option", "github:acme/shop\n--option sandbox false"],
      ["--option as the ref", "--option"],
      ["argv flag after the ref", "github:acme/shop --option allow-import-from-derivation true"],
      ["leading dash", "-github:acme/shop"],
      ["command substitution", "github:acme/$(id)"],
      ["backticks", "github:acme/`id`"],
      ["semicolon", "github:acme/shop;rm -rf /"],
      ["pipe", "github:acme/shop|sh"],
      ["redirect", "github:acme/shop>/etc/passwd"],
      ["double quote", 'github:acme/shop"'],
      ["single quote", "github:acme/shop'"],
      ["tab", "github:acme/shop\tx"],
      ["NUL byte", "github:acme/shop\u0000"],
      ["non-ASCII homoglyph", "github:аcme/shop"],
      ["percent-encoded newline", "github:acme/shop?ref=main%0a--option"],
      ["&& in the query", "github:acme/shop?ref=main&&dir=x"],
      ["$ in a query value", "github:acme/shop?ref=$HOME"],
      ["fragment", "github:acme/shop#web"],
      ["empty fragment", "github:acme/shop#"],
      // github / gitlab / sourcehut
      ["github: without a repository", "github:acme"],
      ["github: empty owner", "github:/shop"],
      ["github: host override", "github:acme/shop?host=evil.example.com"],
      ["github: unknown parameter", "github:acme/shop?foo=bar"],
      ["github: a short commit", "github:acme/shop?rev=abc123"],
      ["github: a commit that is not hex", "github:acme/shop?rev=zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"],
      ["github: branch twice (path and ?ref)", "github:acme/shop/main?ref=dev"],
      ["github: branch and commit", "github:acme/shop?ref=main&rev=0123456789abcdef0123456789abcdef01234567"],
      ["github: dir escaping with ..", "github:acme/shop?dir=../../etc"],
      ["github: a branch Nix refuses in the path", "github:acme/shop/~main"],
      ["github: a branch starting with a dot", "github:acme/shop/.hidden"],
      ["github: a + in ?ref", "github:acme/shop?ref=v1+x"],
      ["github: commit twice", "github:acme/shop/0123456789abcdef0123456789abcdef01234567?rev=0123456789abcdef0123456789abcdef01234567"],
      ["github: dir twice", "github:acme/shop?dir=a&dir=b"],
      ["gitlab: without a repository", "gitlab:acme"],
      ["gitlab: host override", "gitlab:acme/shop?host=169.254.169.254"],
      ["gitlab: a commit that is not hex", "gitlab:acme/shop?rev=main"],
      ["sourcehut: without a repository", "sourcehut:~acme"],
      ["sourcehut: unknown parameter", "sourcehut:~acme/shop?submodules=1"],
      // git
      ["git+https: no host", "git+https:///shop.git"],
      ["git+https: user and password", "git+https://user:hunter2@git.example.com/shop.git"],
      ["git+https: token as user", "git+https://ghp_token@git.example.com/shop.git"],
      ["git+https: loopback", "git+https://127.0.0.1/shop.git"],
      ["git+https: private address", "git+https://10.0.0.8/shop.git"],
      ["git+https: metadata address", "git+https://169.254.169.254/latest/meta-data"],
      ["git+https: localhost", "git+https://localhost/shop.git"],
      ["git+https: IPv6 loopback", "git+https://[::1]/shop.git"],
      ["git+https: branch with ..", "git+https://git.example.com/shop.git?ref=a..b"],
      ["git+https: branch with a space", "git+https://git.example.com/shop.git?ref=a%20b"],
      ["git+https: unknown parameter", "git+https://git.example.com/shop.git?foo=bar"],
      ["git+https: ref twice", "git+https://git.example.com/shop.git?ref=a&ref=b"],
      ["git+https: branch ending in .lock", "git+https://git.example.com/shop.git?ref=main.lock"],
      ["git+https: branch ending in /", "git+https://git.example.com/shop.git?ref=main/"],
      ["git+https: branch with //", "git+https://git.example.com/shop.git?ref=a//b"],
      ["git+ssh: branch with /.", "git+ssh://git@git.example.com/shop.git?ref=a/.b"],
      ["git+https: bad commit", "git+https://git.example.com/shop.git?rev=main"],
      ["git+http (plain http)", "git+http://git.example.com/shop.git"],
      ["git+file", "git+file:///srv/shop"],
      ["git:// protocol", "git://git.example.com/shop.git"],
      ["git+ssh: private address", "git+ssh://git@192.168.1.10/shop.git"],
      // mercurial, tarballs, files, paths, registry
      ["hg+https", "hg+https://hg.example.com/shop"],
      ["hg+ssh", "hg+ssh://hg@hg.example.com/shop"],
      ["tarball+http", "tarball+http://example.com/shop.tar.gz"],
      ["tarball+file", "tarball+file:///tmp/shop.tar.gz"],
      ["tarball+https: loopback", "tarball+https://127.0.0.1/shop.tar.gz"],
      ["file+https", "file+https://example.com/flake.nix"],
      ["https: not an archive", "https://example.com/shop"],
      ["https: credentials", "https://user:pw@example.com/shop.tar.gz"],
      ["https: private address", "https://172.16.0.1/shop.tar.gz"],
      ["http archive", "http://example.com/shop.tar.gz"],
      ["file: archive", "file:///tmp/shop.tar.gz"],
      ["path:", "path:/etc"],
      ["path: relative", "path:./shop"],
      ["bare absolute path", "/nix/store"],
      ["bare relative path", "./."],
      ["home directory", "~/shop"],
      ["indirect id", "nixpkgs"],
      ["indirect with branch", "nixpkgs/nixos-25.11"],
      ["flake: scheme", "flake:nixpkgs"],
      ["unknown scheme", "svn+https://svn.example.com/shop"],
      ["ftp", "ftp://example.com/shop.tar.gz"],
      ["data URL", "data:text/plain,x"],
    ],
  ],
  // ---- attribute
  [
    "spec.attribute",
    [
      ["empty", ""],
      ["257 characters", long(257)],
      ["a number", 1],
      ["a list", ["web"]],
      ["--option", "--option"],
      ["leading dash", "-web"],
      ["newline", "web\n--option sandbox false"],
      ["command substitution", "$(id)"],
      ["backticks", "`id`"],
      ["semicolon", "web;id"],
      ["pipe", "web|sh"],
      ["glob", "packages.*"],
      ["fragment", "#web"],
      ["space", "packages web"],
      ["leading dot", ".web"],
      ["trailing dot", "web."],
      ["empty segment", "packages..web"],
      ["slash", "packages/web"],
      ["double quote", 'packages."web'],
      ["Nix expression", "(import <nixpkgs> {}).hello"],
      ["angle brackets", "<nixpkgs>"],
      ["non-ASCII", "wéb"],
    ],
  ],
  [
    "spec.format",
    [
      ["unknown", "oci"],
      ["wrong case", "Docker-Archive"],
      ["a number", 1],
      ["empty", ""],
    ],
  ],
  ...badObjectRefs("spec.sshKeySecretRef"),
  ...badObjectRefs("spec.sourceCredentialsSecretRef"),
  // ---- image
  [
    "spec.image",
    [
      ["missing", remove],
      ["a string", "registry.example.com/acme/web"],
      ["a list", [{ repository: "registry.example.com/acme/web" }]],
      ["without a repository", {}, "spec.image.repository"],
    ],
  ],
  [
    "spec.image.repository",
    [
      ["empty", ""],
      ["a number", 5000],
      ["uppercase path", "registry.example.com/Acme/web"],
      ["no registry host (implicit Docker Hub)", "acme/web"],
      ["a bare name", "web"],
      ["with a tag", "registry.example.com/acme/web:latest"],
      ["with a digest", `registry.example.com/acme/web@sha256:${long(64, "0")}`],
      ["with a scheme", "https://registry.example.com/acme/web"],
      ["trailing slash", "registry.example.com/acme/web/"],
      ["double slash", "registry.example.com//web"],
      ["only a host", "registry.example.com"],
      ["underscore first", "registry.example.com/_web"],
      ["space", "registry.example.com/acme web"],
      ["newline", "registry.example.com/acme/web\n--dest-creds"],
      ["shell metacharacters", "registry.example.com/acme/$(id)"],
      ["flag", "--insecure-policy"],
      ["port out of the pattern", "registry.example.com:123456/web"],
      ["256 characters", `registry.example.com/${long(235)}`],
    ],
  ],
  [
    "spec.image.tags",
    [
      ["a string", "latest"],
      ["17 tags", list(17, (i) => `t${i}`)],
    ],
  ],
  [
    "spec.image.tags[1]",
    [
      ["empty", ["latest", ""]],
      ["leading dash", ["latest", "-rc"]],
      ["leading dot", ["latest", ".rc"]],
      ["129 characters", ["latest", long(129)]],
      ["space", ["latest", "v 1"]],
      ["colon", ["latest", "v1:2"]],
      ["slash", ["latest", "v1/2"]],
      ["at sign", ["latest", "v1@sha256"]],
      ["newline", ["latest", "v1\nv2"]],
      ["a number", ["latest", 1]],
    ].map(([label, value]) => [label as string, value, "spec.image.tags[1]"] as Bad),
  ],
  ...badObjectRefs("spec.image.pushSecretRef"),
  [
    "spec.image.config",
    [
      ["a string", "entrypoint=/bin/web"],
      ["unknown field", { entrypoint: ["/bin/web"], healthcheck: { test: ["x"] } }, "spec.image.config.healthcheck"],
      ["Docker's capitalised Entrypoint", { Entrypoint: ["/bin/web"] }, "spec.image.config.Entrypoint"],
    ],
  ],
  [
    "spec.image.config.entrypoint",
    [
      ["a string", "/bin/web --port 80"],
      ["65 items", list(65, () => "x")],
      ["an item of 4097 characters", ["/bin/web", long(4097)], "spec.image.config.entrypoint[1]"],
      ["a number item", ["/bin/web", 8080], "spec.image.config.entrypoint[1]"],
    ],
  ],
  [
    "spec.image.config.cmd",
    [
      ["a string", "--port 8080"],
      ["65 items", list(65, () => "x")],
      ["an item of 4097 characters", [long(4097)], "spec.image.config.cmd[0]"],
      ["a number item", ["--port", 8080], "spec.image.config.cmd[1]"],
    ],
  ],
  [
    "spec.image.config.env",
    [
      ["a map", { APP_MODE: "production" }],
      ["129 items", list(129, (i) => ({ name: `V${i}`, value: "x" }))],
      ["an item without a name", [{ value: "x" }], "spec.image.config.env[0].name"],
      ["an item with valueFrom", [{ name: "A", valueFrom: { secretKeyRef: { name: "s", key: "k" } } }], "spec.image.config.env[0].valueFrom"],
      ["a string item", ["APP_MODE=production"], "spec.image.config.env[0]"],
    ],
  ],
  [
    "spec.image.config.env[0].name",
    [
      ["empty", [{ name: "", value: "x" }]],
      ["leading digit", [{ name: "1X", value: "x" }]],
      ["dash", [{ name: "APP-MODE", value: "x" }]],
      ["equals sign", [{ name: "A=B", value: "x" }]],
      ["space", [{ name: "APP MODE", value: "x" }]],
      ["newline", [{ name: "A\nB", value: "x" }]],
      ["257 characters", [{ name: long(257, "A"), value: "x" }]],
    ].map(([label, value]) => [label as string, value, "spec.image.config.env[0].name"] as Bad),
  ],
  [
    "spec.image.config.env[0].value",
    [
      ["8193 characters", [{ name: "A", value: long(8193) }]],
      ["a number", [{ name: "PORT", value: 8080 }]],
      ["a boolean", [{ name: "DEBUG", value: true }]],
    ].map(([label, value]) => [label as string, value, "spec.image.config.env[0].value"] as Bad),
  ],
  [
    "spec.image.config.workingDir",
    [
      ["1025 characters", `/${long(1024)}`],
      ["a number", 0],
    ],
  ],
  [
    "spec.image.config.user",
    [
      ["a number", 65532],
      ["three parts", "a:b:c"],
      ["space", "web user"],
      ["command substitution", "$(id -u)"],
      ["empty", ""],
      ["65 characters", long(65)],
    ],
  ],
  [
    "spec.image.config.exposedPorts",
    [
      ["a string", "8080"],
      ["65 items", list(65, (i) => String(8000 + i))],
    ],
  ],
  [
    "spec.image.config.exposedPorts[0]",
    [
      ["a number", [8080]],
      ["unknown protocol", ["8080/http"]],
      ["a name", ["http"]],
      ["six digits", ["123456"]],
      ["above 65535", ["65536"]],
      ["port 0", ["0"]],
      ["negative", ["-1"]],
      ["a range", ["8000-8080"]],
      ["with a host", ["0.0.0.0:8080"]],
    ].map(([label, value]) => [label as string, value, "spec.image.config.exposedPorts[0]"] as Bad),
  ],
  [
    "spec.image.config.labels",
    [
      ["a list", ["a=b"]],
      ["a key with a space", { "a b": "x" }],
      ["an empty key", { "": "x" }],
      ["a key with a leading dash", { "-a": "x" }],
      ["a key with a newline", { "a\nb": "x" }],
      ["a key of 254 characters", { [long(254)]: "x" }],
      ["65 entries", Object.fromEntries(list(65, (i) => [`k${i}`, "x"]))],
    ],
  ],
  [
    "spec.image.config.labels.org.opencontainers.image.source",
    [
      ["a value of 1025 characters", { "org.opencontainers.image.source": long(1025) }],
      ["a number value", { "org.opencontainers.image.source": 1 }],
    ].map(([label, value]) => [label as string, value, "spec.image.config.labels"] as Bad),
  ],
  [
    "spec.image.maxLayers",
    [
      ["0", 0],
      ["126 (above the OCI limit the operator allows)", 126],
      ["negative", -1],
      ["a fraction", 1.5],
      ["a string", "60"],
      ["absurd", 1e9],
    ],
  ],
  [
    "spec.image.compression",
    [
      ["zstd (not offered)", "zstd"],
      ["wrong case", "GZIP"],
      ["a boolean", true],
    ],
  ],
  [
    "spec.image.attestations",
    [
      ["a boolean", false],
      ["unknown field", { sbom: true, vex: true }, "spec.image.attestations.vex"],
    ],
  ],
  ["spec.image.attestations.sbom", [["a string", "yes"]]],
  ["spec.image.attestations.provenance", [["a number", 1]]],
  ...badObjectRefs("spec.image.attestations.signingKeySecretRef"),
  // ---- triggers
  [
    "spec.triggers",
    [
      ["a string", "5m"],
      ["unknown field (webhook)", { webhook: true }, "spec.triggers.webhook"],
      ["unknown field (cron)", { cron: "* * * * *" }, "spec.triggers.cron"],
    ],
  ],
  ["spec.triggers.interval", badDurations("interval", "30s", "168h", "m")],
  // ---- warm
  [
    "spec.warm",
    [
      ["a string", "0 3 * * *"],
      ["without a schedule", { timeZone: "UTC" }, "spec.warm.schedule"],
      ["unknown field", { schedule: "@daily", jitter: "5m" }, "spec.warm.jitter"],
    ],
  ],
  [
    "spec.warm.schedule",
    [
      ["empty", ""],
      ["four fields", "0 3 * *"],
      ["six fields (seconds)", "0 0 3 * * *"],
      ["minute 60", "60 3 * * *"],
      ["hour 24", "0 24 * * *"],
      ["day 32", "0 3 32 * *"],
      ["day 0", "0 3 0 * *"],
      ["month 13", "0 3 * 13 *"],
      ["weekday 8", "0 3 * * 8"],
      ["unknown weekday name", "0 3 * * FOO"],
      ["@every", "@every 5m"],
      ["@reboot", "@reboot"],
      ["@annually (unknown to the cron parser)", "@annually"],
      ["@midnight (unknown to the cron parser)", "@midnight"],
      ["words", "every night"],
      ["Quartz ?", "0 3 ? * *"],
      ["Quartz L", "0 3 L * *"],
      ["trailing newline", "0 3 * * *\n"],
      ["command substitution", "$(id) * * * *"],
      ["a number", 3],
      ["129 characters", `0 3 * * ${list(64, () => "1").join(",")}`],
    ],
  ],
  [
    "spec.warm.timeZone",
    [
      ["unknown zone", "Mars/Olympus_Mons"],
      ["misspelt", "Europe/Berlinn"],
      ["empty", ""],
      ["a path", "../../etc/localtime"],
      ["an offset", "+02:00"],
      ["space", "Europe/Berlin Mitte"],
      ["a number", 1],
      ["65 characters", `Europe/${long(58)}`],
    ].map(([label, value]) => [label as string, { schedule: "@daily", timeZone: value }, "spec.warm.timeZone"] as Bad),
  ],
  [
    "spec.warm.attributes",
    [
      ["a string", { schedule: "@daily", attributes: "devShells.x86_64-linux.default" }],
      ["33 items", { schedule: "@daily", attributes: list(33, (i) => `a${i}`) }],
      ["a duplicate", { schedule: "@daily", attributes: ["web", "web"] }],
    ].map(([label, value]) => [label as string, value, "spec.warm.attributes"] as Bad),
  ],
  [
    "spec.warm.attributes[0]",
    [
      ["shell metacharacters", { schedule: "@daily", attributes: ["a;id"] }],
      ["--option", { schedule: "@daily", attributes: ["--option"] }],
      ["empty", { schedule: "@daily", attributes: [""] }],
    ].map(([label, value]) => [label as string, value, "spec.warm.attributes[0]"] as Bad),
  ],
  [
    "spec.warm.updateInputs",
    [
      ["a string", { schedule: "@daily", updateInputs: "yes" }],
      ["a number", { schedule: "@daily", updateInputs: 1 }],
    ].map(([label, value]) => [label as string, value, "spec.warm.updateInputs"] as Bad),
  ],
  // ---- rollout
  [
    "spec.rollout",
    [
      ["a string", "Automatic"],
      ["a list of workloads", [{ kind: "Deployment", name: "web" }]],
      ["targets (workloads opt in with an annotation)", { targets: [{ kind: "Deployment", name: "web" }] }, "spec.rollout.targets"],
      ["a workload name", { deployment: "web" }, "spec.rollout.deployment"],
      ["rollbackOnFailure with Disabled", { policy: "Disabled", rollbackOnFailure: true }, "spec.rollout.rollbackOnFailure"],
    ],
  ],
  [
    "spec.rollout.policy",
    [
      ["Manual", { policy: "Manual" }],
      ["wrong case", { policy: "automatic" }],
      ["a boolean", { policy: true }],
      ["empty", { policy: "" }],
    ].map(([label, value]) => [label as string, value, "spec.rollout.policy"] as Bad),
  ],
  [
    "spec.rollout.rollbackOnFailure",
    [
      ["a string", { rollbackOnFailure: "true" }],
      ["a number", { rollbackOnFailure: 1 }],
    ].map(([label, value]) => [label as string, value, "spec.rollout.rollbackOnFailure"] as Bad),
  ],
  [
    "spec.rollout.progressDeadline",
    [
      ["below 10s", { progressDeadline: "5s" }],
      ["above 24h", { progressDeadline: "25h" }],
      ["in words", { progressDeadline: "ten minutes" }],
      ["a number", { progressDeadline: 600 }],
    ].map(([label, value]) => [label as string, value, "spec.rollout.progressDeadline"] as Bad),
  ],
  // ---- build
  [
    "spec.build",
    [
      ["a string", "fast"],
      ["unknown field (privileged)", { privileged: true }, "spec.build.privileged"],
      ["unknown field (image)", { image: "evil.example.com/builder" }, "spec.build.image"],
      ["unknown field (serviceAccountName)", { serviceAccountName: "admin" }, "spec.build.serviceAccountName"],
      ["unknown field (env)", { env: [{ name: "NIX_CONFIG", value: "sandbox = false" }] }, "spec.build.env"],
    ],
  ],
  [
    "spec.build.timeout",
    [
      ["below 1m", { timeout: "30s" }],
      ["above 24h", { timeout: "25h" }],
      ["in days", { timeout: "2d" }],
      ["a number", { timeout: 3600 }],
      ["empty", { timeout: "" }],
    ].map(([label, value]) => [label as string, value, "spec.build.timeout"] as Bad),
  ],
  [
    "spec.build.resources",
    [
      ["a string", { resources: "large" }],
      ["claims (unknown)", { resources: { claims: [{ name: "gpu" }] } }, "spec.build.resources.claims"],
      ["a GPU request (unknown resource)", { resources: { limits: { "nvidia.com/gpu": "1" } } }, "spec.build.resources.limits.nvidia.com/gpu"],
    ],
  ],
  [
    "spec.build.resources.requests.cpu",
    badQuantities("requests.cpu").map(([label, value]) => [label, { resources: { requests: { cpu: value } } }, "spec.build.resources.requests.cpu"] as Bad),
  ],
  [
    "spec.build.resources.limits.memory",
    badQuantities("limits.memory").map(([label, value]) => [label, { resources: { limits: { memory: value } } }, "spec.build.resources.limits.memory"] as Bad),
  ],
  [
    "spec.build.resources.limits.ephemeral-storage",
    [
      [
        "limits.ephemeral-storage: 33 characters",
        { resources: { limits: { "ephemeral-storage": long(33, "1") } } },
        "spec.build.resources.limits.ephemeral-storage",
      ],
    ],
  ],
  [
    "spec.build.nodeSelector",
    [
      ["a list", { nodeSelector: ["kubernetes.io/arch=amd64"] }],
      ["a key with a space", { nodeSelector: { "kubernetes.io/ arch": "amd64" } }],
      ["a key with a leading dash", { nodeSelector: { "-arch": "amd64" } }],
      ["65 entries", { nodeSelector: Object.fromEntries(list(65, (i) => [`k${i}`, "x"])) }],
    ].map(([label, value]) => [label as string, value, "spec.build.nodeSelector"] as Bad),
  ],
  [
    "spec.build.nodeSelector.kubernetes.io/arch",
    [
      ["a value of 64 characters", { nodeSelector: { "kubernetes.io/arch": long(64) } }],
      ["a number value", { nodeSelector: { "kubernetes.io/arch": 64 } }],
    ].map(([label, value]) => [label as string, value, "spec.build.nodeSelector"] as Bad),
  ],
  [
    "spec.build.tolerations",
    [
      ["a map", { tolerations: { key: "builders" } }],
      ["33 items", { tolerations: list(33, (i) => ({ key: `k${i}`, operator: "Exists" })) }],
      ["an unknown field", { tolerations: [{ key: "builders", operator: "Exists", priority: 1 }] }, "spec.build.tolerations[0].priority"],
    ].map(([label, value, field]) => [label as string, value, (field as string) ?? "spec.build.tolerations"] as Bad),
  ],
  [
    "spec.build.tolerations[0]",
    [
      ["operator In", { operator: "In" }, "operator"],
      ["operator wrong case", { operator: "exists" }, "operator"],
      ["effect NoRun", { effect: "NoRun" }, "effect"],
      ["tolerationSeconds negative", { tolerationSeconds: -1 }, "tolerationSeconds"],
      ["tolerationSeconds above a year", { tolerationSeconds: 31_536_001 }, "tolerationSeconds"],
      ["tolerationSeconds a string", { tolerationSeconds: "60" }, "tolerationSeconds"],
      ["key of 318 characters", { key: long(318) }, "key"],
      ["value of 64 characters", { key: "k", operator: "Equal", value: long(64) }, "value"],
    ].map(
      ([label, value, field]) => [label as string, { tolerations: [{ key: "builders", ...(value as object) }] }, `spec.build.tolerations[0].${field}`] as Bad,
    ),
  ],
  [
    "spec.build.nixConfig",
    [
      ["a string", { nixConfig: "sandbox = false" }],
      ["sandbox (arbitrary nix.conf)", { nixConfig: { sandbox: false } }, "spec.build.nixConfig.sandbox"],
      ["post-build-hook", { nixConfig: { "post-build-hook": "/bin/sh" } }, "spec.build.nixConfig.post-build-hook"],
      ["extra-substituters", { nixConfig: { "extra-substituters": ["https://c.example.org"] } }, "spec.build.nixConfig.extra-substituters"],
      ["allow-import-from-derivation", { nixConfig: { "allow-import-from-derivation": true } }, "spec.build.nixConfig.allow-import-from-derivation"],
      ["require-sigs", { nixConfig: { "require-sigs": false } }, "spec.build.nixConfig.require-sigs"],
      ["17 substituters", { nixConfig: { substituters: list(17, (i) => `https://c${i}.example.org`) } }, "spec.build.nixConfig.substituters"],
      ["17 keys", { nixConfig: { trustedPublicKeys: list(17, () => goodKey) } }, "spec.build.nixConfig.trustedPublicKeys"],
    ].map(([label, value, field]) => [label as string, value, (field as string) ?? "spec.build.nixConfig"] as Bad),
  ],
  [
    "spec.build.nixConfig.substituters[0]",
    [
      ["plain http", "http://cache.example.org"],
      ["s3", "s3://bucket"],
      ["a local store", "file:///nix/store"],
      ["daemon", "daemon"],
      ["a query", "https://cache.example.org?priority=1"],
      ["a space", "https://cache.example.org x"],
      ["513 characters", `https://${long(505)}`],
      ["credentials", "https://user:secret@cache.example.org"],
      ["a NUL byte", "https://cache.example.org/\u0000"],
      ["a double quote", 'https://cache.example.org/"x'],
      ["a bidi override", "https://cache.example.org/\u202e"],
    ].map(([label, value]) => [label as string, { nixConfig: { substituters: [value] } }, "spec.build.nixConfig.substituters[0]"] as Bad),
  ],
  [
    "spec.build.nixConfig.trustedPublicKeys[0]",
    [
      ["without a name", "6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="],
      ["a short key", "cache.example.org-1:abc="],
      ["not base64", "cache.example.org-1:!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!="],
      ["two keys in one", `${goodKey} ${goodKey}`],
      ["a name starting with -", `-${goodKey}`],
    ].map(([label, value]) => [label as string, { nixConfig: { trustedPublicKeys: [value] } }, "spec.build.nixConfig.trustedPublicKeys[0]"] as Bad),
  ],
  [
    "spec.build.caBundleRef",
    [
      ["a string", { caBundleRef: "ca-bundle" }],
      ["without a name", { caBundleRef: {} }, "spec.build.caBundleRef.name"],
      ["a bad name", { caBundleRef: { name: "CA_Bundle" } }, "spec.build.caBundleRef.name"],
      ["a key with a slash", { caBundleRef: { name: "ca", key: "../ca.crt" } }, "spec.build.caBundleRef.key"],
      ["a key of 254 characters", { caBundleRef: { name: "ca", key: long(254) } }, "spec.build.caBundleRef.key"],
      ["a namespace", { caBundleRef: { name: "ca", namespace: "cert-manager" } }, "spec.build.caBundleRef.namespace"],
    ].map(([label, value, field]) => [label as string, value, (field as string) ?? "spec.build.caBundleRef"] as Bad),
  ],
  [
    "spec.build.allowImportFromDerivation",
    [
      ["a string", { allowImportFromDerivation: "true" }],
      ["a number", { allowImportFromDerivation: 1 }],
    ].map(([label, value]) => [label as string, value, "spec.build.allowImportFromDerivation"] as Bad),
  ],
  // ---- suspend, historyLimit, unknown top-level fields
  [
    "spec.suspend",
    [
      ["a string", "false"],
      ["yes", "yes"],
      ["a number", 0],
    ],
  ],
  [
    "spec.historyLimit",
    [
      ["a number", 5],
      ["unknown field", { total: 10 }, "spec.historyLimit.total"],
    ],
  ],
  [
    "spec.historyLimit.successful",
    [
      ["negative", { successful: -1 }],
      ["101", { successful: 101 }],
      ["a fraction", { successful: 1.5 }],
      ["a string", { successful: "5" }],
    ].map(([label, value]) => [label as string, value, "spec.historyLimit.successful"] as Bad),
  ],
  [
    "spec.historyLimit.failed",
    [
      ["negative", { failed: -1 }],
      ["101", { failed: 101 }],
    ].map(([label, value]) => [label as string, value, "spec.historyLimit.failed"] as Bad),
  ],
  ["spec.flakeRef", [["unknown field (a misspelt flake)", "github:acme/shop"]]],
  ["spec.attributes", [["unknown field (plural attribute)", ["web"]]]],
  ["spec.repository", [["unknown field (repository outside image)", "registry.example.com/acme/web"]]],
  ["spec.schedule", [["unknown field (schedule outside warm)", "@daily"]]],
  ["spec.serviceAccountName", [["unknown field", "admin"]]],
  ["spec.nixConfig", [["unknown field (nixConfig outside build)", { sandbox: false }]]],
];

/** Rows whose values are the parent object (or list) rather than the field itself. */
const writtenAt: Record<string, string> = {
  "spec.image.tags[1]": "spec.image.tags",
  "spec.image.config.env[0].name": "spec.image.config.env",
  "spec.image.config.env[0].value": "spec.image.config.env",
  "spec.image.config.exposedPorts[0]": "spec.image.config.exposedPorts",
  "spec.image.config.labels.org.opencontainers.image.source": "spec.image.config.labels",
  "spec.warm.timeZone": "spec.warm",
  "spec.warm.attributes": "spec.warm",
  "spec.warm.attributes[0]": "spec.warm",
  "spec.warm.updateInputs": "spec.warm",
  "spec.rollout.policy": "spec.rollout",
  "spec.rollout.rollbackOnFailure": "spec.rollout",
  "spec.rollout.progressDeadline": "spec.rollout",
  "spec.historyLimit.successful": "spec.historyLimit",
  "spec.historyLimit.failed": "spec.historyLimit",
};
const writtenPath = (row: string) => writtenAt[row] ?? (row.startsWith("spec.build.") ? "spec.build" : row);

/** The generated invalid cases (see `table`). */
function generatedInvalidCases(): CorpusCase[] {
  const cases: CorpusCase[] = [];
  for (const [row, bads] of table) {
    for (const [label, value, field] of bads) {
      const path = writtenPath(row);
      const object = withValue(nixImage("bad", baseSpec()), path, value);
      cases.push({ name: `${row}: ${label}`, field: field ?? row, object });
    }
  }
  // A git+ssh ref needs a key Secret; and one git+ssh ref per secret-ref row would be redundant.
  cases.push({
    name: "spec.sshKeySecretRef: git+ssh without a key Secret",
    field: "spec.sshKeySecretRef",
    object: nixImage("bad", { ...baseSpec(), flake: "git+ssh://git@git.example.com/acme/shop.git" }),
  });
  return cases;
}

/** The hand-written invalid files, each with a `# field:` header. */
function fileInvalidCases(): CorpusCase[] {
  return readdirSync(join(fixtures, "invalid"))
    .sort()
    .map((file) => {
      const text = readFileSync(join(fixtures, "invalid", file), "utf8");
      return { name: `invalid/${file}`, field: /^# field: (\S+)/.exec(text)![1]!, object: parseYaml(text) };
    });
}

export const invalidCorpus = (): CorpusCase[] => [...fileInvalidCases(), ...generatedInvalidCases()];

// ---- valid side ------------------------------------------------------------------------------

interface ValidCase {
  name: string;
  object: Json;
}

const isNixImage = (o: Json) => o && typeof o === "object" && o.kind === "NixImage" && String(o.apiVersion).startsWith("niximage.io/");

function nixImagesIn(text: string): Json[] {
  return parseAllDocuments(text)
    .map((d) => d.toJS() as Json)
    .filter(isNixImage);
}

function yamlFilesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && /\.ya?ml$/.test(e.name))
    .map((e) => join(e.parentPath, e.name))
    .sort();
}

/** Every NixImage a user is shown: README and docs code blocks, examples/, the chart's NOTES, the valid fixtures. */
function documentedNixImages(): ValidCase[] {
  const out: ValidCase[] = [];
  const add = (source: string, objects: Json[]) => objects.forEach((object, i) => out.push({ name: `${source} #${i + 1} (${object.metadata?.name})`, object }));
  add("test/fixtures/niximages/valid.yaml", nixImagesIn(readFileSync(join(fixtures, "valid.yaml"), "utf8")));
  for (const file of yamlFilesUnder(join(root, "examples"))) add(relative(root, file), nixImagesIn(readFileSync(file, "utf8")));
  for (const doc of [
    "README.md",
    ...readdirSync(join(root, "docs"))
      .filter((f) => f.endsWith(".md"))
      .map((f) => `docs/${f}`),
  ]) {
    const blocks = [...readFileSync(join(root, doc), "utf8").matchAll(/^( *)```ya?ml\n([\s\S]*?)^\1```/gm)];
    const objects = blocks.flatMap(([, indent, body]) => {
      try {
        return nixImagesIn(body!.replace(new RegExp(`^${indent}`, "gm"), ""));
      } catch {
        return [];
      }
    });
    add(doc, objects);
  }
  const notes = readFileSync(join(root, "charts/nix-image-operator/templates/NOTES.txt"), "utf8");
  for (const [, body] of notes.matchAll(/<<'YAML'\n([\s\S]*?)\n\s*YAML\n/g)) {
    add("charts/nix-image-operator/templates/NOTES.txt", nixImagesIn(body!.replace(/^ {2}/gm, "").replace(/\{\{[^}]*\}\}/g, "default")));
  }
  return out;
}

/** Realistic variations at the edges of every field: what a strict check might wrongly refuse. */
function variationCases(): ValidCase[] {
  const spec = (patch: Json) => ({ ...baseSpec(), ...patch });
  const variations: [string, Json][] = [
    ["minimal (attribute defaulted)", { flake: "github:acme/shop", image: { repository: "registry.example.com/acme/web" } }],
    ...[
      "github:acme/shop",
      "github:acme/shop/main",
      "github:acme/shop/v1.2.3",
      "github:Acme-Corp/my_shop.nix",
      "github:acme/shop/0123456789abcdef0123456789abcdef01234567",
      "github:acme/shop?rev=0123456789abcdef0123456789abcdef01234567",
      "github:acme/shop?ref=release/2026-12&dir=services/api",
      "github:acme/shop?dir=nix",
      "gitlab:acme/shop",
      "gitlab:acme/shop?ref=main",
      "gitlab:acme%2Fteam/shop",
      "sourcehut:~acme/shop",
      "sourcehut:~acme/shop/main",
      "git+https://git.example.com/acme/shop.git",
      "git+https://git.example.com/acme/shop?ref=refs/heads/main",
      "git+https://git.example.com:8443/acme/shop.git?ref=main&rev=0123456789abcdef0123456789abcdef01234567",
      "git+https://git.example.com/acme/shop.git?submodules=1",
      "git+https://8.8.8.8/acme/shop.git",
      "tarball+https://example.com/shop.tar.gz",
      "https://example.com/releases/shop-1.0.tar.gz",
      "https://example.com/releases/shop-1.0.zip",
      "https://github.com/acme/shop/archive/main.tar.gz",
      `github:acme/${long(1000)}`,
    ].map((flake, i) => [`flake ${i + 1}: ${flake.slice(0, 80)}`, spec({ flake })] as [string, Json]),
    ["git+ssh with a key Secret", spec({ flake: "git+ssh://git@git.example.com/acme/shop.git", sshKeySecretRef: { name: "deploy-key" } })],
    [
      "git+ssh with source credentials",
      spec({ flake: "git+ssh://git@git.example.com:2222/acme/shop.git?ref=main", sourceCredentialsSecretRef: { name: "src" } }),
    ],
    [
      "private git+https with source credentials",
      spec({ flake: "git+https://git.example.com/acme/private.git", sourceCredentialsSecretRef: { name: "netrc" } }),
    ],
    ...["default", "packages.x86_64-linux.web", "packages.aarch64-linux.web-server_2", "legacyPackages.x86_64-linux.hello", "a'b", long(256)].map(
      (attribute) => [`attribute ${attribute.slice(0, 40)}`, spec({ attribute })] as [string, Json],
    ),
    ...["auto", "package", "docker-archive", "stream-layered", "nix2container"].map((format) => [`format ${format}`, spec({ format })] as [string, Json]),
    ...[
      "localhost/web",
      "localhost:5000/web",
      "registry:5000/web",
      "ghcr.io/acme/web",
      "123456789012.dkr.ecr.eu-central-1.amazonaws.com/acme/web",
      "europe-docker.pkg.dev/acme-prod/images/web",
      "registry.example.com/a/b/c/d/web__x.y-z",
      `registry.example.com/${long(234)}`,
    ].map((repository) => [`repository ${repository.slice(0, 60)}`, spec({ image: { repository } })] as [string, Json]),
    ["16 tags at 128 characters", spec({ image: { repository: "r.example.com/w", tags: list(16, (i) => `${i}`.padEnd(128, "x")) } })],
    ["tags of every kind", spec({ image: { repository: "r.example.com/w", tags: ["latest", "v1.2.3", "_internal", "2026-12-03", "A_b.C-d"] } })],
    ["empty tags", spec({ image: { repository: "r.example.com/w", tags: [] } })],
    ["maxLayers 1 and 125", spec({ image: { repository: "r.example.com/w", maxLayers: 1 } })],
    ["maxLayers 125", spec({ image: { repository: "r.example.com/w", maxLayers: 125 } })],
    ...["none", "gzip"].map((compression) => [`compression ${compression}`, spec({ image: { repository: "r.example.com/w", compression } })] as [string, Json]),
    [
      "full image config at its bounds",
      spec({
        image: {
          repository: "r.example.com/w",
          config: {
            entrypoint: list(64, () => long(4096)),
            cmd: [],
            env: list(128, (i) => ({ name: `_V${i}`, value: i === 0 ? long(8192) : "" })),
            workingDir: `/${long(1023)}`,
            user: "nobody:nogroup",
            exposedPorts: ["1", "65535", "80/tcp", "53/udp", "9/sctp"],
            labels: { "org.opencontainers.image.source": long(1024), a: "", "example.com/team_name": "shop" },
          },
        },
      }),
    ],
    ...["0", "65532", "web", "65532:65532", "web:web", "a.b-c_d"].map(
      (user) => [`user ${user}`, spec({ image: { repository: "r.example.com/w", config: { user } } })] as [string, Json],
    ),
    [
      "attestations off, signing key",
      spec({ image: { repository: "r.example.com/w", attestations: { sbom: false, provenance: false, signingKeySecretRef: { name: "cosign" } } } }),
    ],
    ["attestations empty", spec({ image: { repository: "r.example.com/w", attestations: {} } })],
    ["push Secret with dots", spec({ image: { repository: "r.example.com/w", pushSecretRef: { name: "regcred.prod-1" } } })],
    [`push Secret of 253 characters`, spec({ image: { repository: "r.example.com/w", pushSecretRef: { name: `${long(126)}.${long(126)}` } } })],
    ...["30s", "1m", "5m", "1h30m", "168h", "0.5m", "90s"].map((interval) => [`interval ${interval}`, spec({ triggers: { interval } })] as [string, Json]),
    ["triggers empty", spec({ triggers: {} })],
    ...[
      "0 3 * * *",
      "*/15 * * * *",
      "0 0 1 1 *",
      "59 23 31 12 7",
      "0 3 * * MON-FRI",
      "0 3 * * mon,wed,fri",
      "0 3 1-15/2 JAN-JUN *",
      "0  3 * * *",
      "@yearly",
      "@monthly",
      "@weekly",
      "@daily",
      "@hourly",
    ].map((schedule) => [`schedule ${schedule}`, spec({ warm: { schedule } })] as [string, Json]),
    ...["UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+2", "Asia/Kolkata", "America/Port-au-Prince"].map(
      (timeZone) => [`time zone ${timeZone}`, spec({ warm: { schedule: "@daily", timeZone } })] as [string, Json],
    ),
    [
      "warm with 32 attributes and updateInputs",
      spec({ warm: { schedule: "@daily", attributes: list(32, (i) => `checks.x86_64-linux.t${i}`), updateInputs: true } }),
    ],
    ["rollout Disabled", spec({ rollout: { policy: "Disabled" } })],
    ["rollout Disabled, rollbackOnFailure false", spec({ rollout: { policy: "Disabled", rollbackOnFailure: false } })],
    ["rollout with rollback and deadlines at the bounds", spec({ rollout: { rollbackOnFailure: true, progressDeadline: "10s" } })],
    ["rollout progressDeadline 24h", spec({ rollout: { progressDeadline: "24h" } })],
    ["rollout empty", spec({ rollout: {} })],
    ...["1m", "24h", "90m", "1h"].map((timeout) => [`build timeout ${timeout}`, spec({ build: { timeout } })] as [string, Json]),
    [
      "build resources of every form",
      spec({
        build: {
          resources: {
            requests: { cpu: "500m", memory: "512Mi", "ephemeral-storage": "10G" },
            limits: { cpu: "2.5", memory: "8Gi", "ephemeral-storage": "1Ti" },
          },
        },
      }),
    ],
    [
      "build scheduling",
      spec({
        build: {
          nodeSelector: { "kubernetes.io/arch": "arm64", "node.example.com/pool": "" },
          tolerations: [
            { operator: "Exists" },
            { key: "builders", operator: "Equal", value: "true", effect: "NoExecute", tolerationSeconds: 0 },
            { key: "spot", effect: "PreferNoSchedule", tolerationSeconds: 31_536_000 },
          ],
        },
      }),
    ],
    [
      "nixConfig at its bounds",
      spec({
        build: {
          nixConfig: {
            substituters: list(16, (i) => `https://c${i}.example.org/nix-cache/`),
            trustedPublicKeys: list(16, (i) => goodKey.replace("1:", `${i}:`)),
          },
        },
      }),
    ],
    ["caBundleRef with default key", spec({ build: { caBundleRef: { name: "corporate-ca" } } })],
    ["caBundleRef with a key", spec({ build: { caBundleRef: { name: "trust", key: "bundle.pem" } } })],
    ["import from derivation allowed", spec({ build: { allowImportFromDerivation: true } })],
    ["suspended", spec({ suspend: true })],
    ["history 0 and 100", spec({ historyLimit: { successful: 0, failed: 100 } })],
    ["history empty", spec({ historyLimit: {} })],
  ];
  return variations.map(([name, s], i) => ({ name: `variation: ${name}`, object: nixImage(`v${i}`, s) }));
}

export const validCorpus = (): ValidCase[] => [...documentedNixImages(), ...variationCases()];
