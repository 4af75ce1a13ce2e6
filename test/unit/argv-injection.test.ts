// Argv injection (docs/reliability.md row 21): every spec string that reaches a builder step's argv
// or Nix's command line is refused by the schema when it carries an option, a line break or shell
// syntax, at the start, in the middle or at the end; and for every valid NixImage of the corpus,
// each such string arrives as exactly one argv element, right after its own flag, never as an
// option. (Steps run argv without a shell: controller-builder-job.test.ts; Nix gets the installable
// after `--`: nix-command.test.ts.)
import { describe, expect, it } from "vitest";
import { builderJob } from "../../src/controller/builder-job.ts";
import { nixImageSchema, type NixImage } from "../../src/api/niximage.ts";
import { describeZodError } from "../../src/api/describe-issues.ts";
import { validCorpus } from "../support/niximage-corpus.ts";
import { testConfig } from "./controller-fixtures.ts";

/**
 * [what, payload, legal inside a URL]. An option is only dangerous where an argv element starts
 * with it, so those payloads are tried alone and in front; the others everywhere. Characters a URL
 * may carry (`;`, `&`, `*`, `%0a` as text) are not tried on the substituter URL: argv has no shell.
 */
const payloads: [what: string, payload: string, kind: "option" | "anywhere" | "url-legal"][] = [
  ["a newline and an option", "\n--option sandbox false", "anywhere"],
  ["an option", "--option", "option"],
  ["a short option", "-L", "option"],
  ["an option with =", "--store=/tmp/evil", "option"],
  ["a space and an option", " --impure", "anywhere"],
  ["a tab", "\t--impure", "anywhere"],
  ["a carriage return", "\r--impure", "anywhere"],
  ["a NUL byte", "\u0000--impure", "anywhere"],
  ["command substitution", "$(touch /tmp/pwned)", "anywhere"],
  ["backticks", "`id`", "anywhere"],
  ["a semicolon", ";id", "url-legal"],
  ["a pipe", "|sh", "anywhere"],
  ["&&", "&&id", "url-legal"],
  ["a redirect", ">/etc/passwd", "anywhere"],
  ["a double quote", '"', "anywhere"],
  ["a single quote and space", "' x", "anywhere"],
  ["a glob", "*", "url-legal"],
  ["a right-to-left override", "\u202e--", "anywhere"],
  ["a percent-encoded newline", "%0a--option", "url-legal"],
  ["a fragment with an option", "#--option", "anywhere"],
];

/** Where the string goes in the spec (each reaches a step's argv), and a valid value to attach payloads to. */
const fields: [field: string, valid: string, set: (spec: Record<string, unknown>, value: string) => void, url?: boolean][] = [
  ["spec.flake", "github:acme/shop", (s, v) => (s.flake = v)],
  ["spec.attribute", "packages.x86_64-linux.web", (s, v) => (s.attribute = v)],
  ["spec.warm.attributes[0]", "devShells.x86_64-linux.default", (s, v) => (s.warm = { schedule: "@daily", attributes: [v] })],
  ["spec.image.repository", "registry.example.com/acme/web", (s, v) => (s.image = { repository: v })],
  ["spec.image.tags[0]", "stable", (s, v) => (s.image = { repository: "registry.example.com/acme/web", tags: [v] })],
  ["spec.build.nixConfig.substituters[0]", "https://cache.example.org", (s, v) => (s.build = { nixConfig: { substituters: [v] } }), true],
  [
    "spec.build.nixConfig.trustedPublicKeys[0]",
    "cache.example.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=",
    (s, v) => (s.build = { nixConfig: { trustedPublicKeys: [v] } }),
  ],
];

const positions: [where: string, place: (valid: string, payload: string) => string, optionToo: boolean][] = [
  ["alone", (_valid, payload) => payload, true],
  ["in front of a valid value", (valid, payload) => payload + valid, true],
  ["after a valid value", (valid, payload) => valid + payload, false],
];

const cases = fields.flatMap(([field, valid, set, url]) =>
  positions.flatMap(([where, place, optionToo]) =>
    payloads
      .filter(([, , kind]) => (kind === "option" ? optionToo : kind === "url-legal" ? !url : true))
      .map(([what, payload]) => {
        const spec: Record<string, unknown> = { flake: "github:acme/shop", image: { repository: "registry.example.com/acme/web" } };
        set(spec, place(valid, payload));
        return { name: `${field}: ${what}, ${where}`, field, object: { apiVersion: "niximage.io/v1alpha1", kind: "NixImage", metadata: { name: "x" }, spec } };
      }),
  ),
);

describe("argv injection", () => {
  it(`the schema refuses all ${cases.length} injection attempts (${fields.length} fields, ${payloads.length} payloads, ${positions.length} positions), naming the field`, () => {
    const accepted: string[] = [];
    for (const c of cases) {
      const result = nixImageSchema.safeParse(c.object);
      if (result.success) accepted.push(`${c.name}: accepted`);
      else if (!describeZodError(result.error).some((line) => line.startsWith(`${c.field}:`))) {
        accepted.push(`${c.name}: refused, but not naming ${c.field}: ${describeZodError(result.error).join("; ")}`);
      }
    }
    expect(accepted).toEqual([]);
  });

  const config = testConfig({ registries: [{ host: "registry.example.com", plainHttp: true }] });
  const images = validCorpus().map((c) => ({ name: c.name, image: nixImageSchema.parse(c.object) as NixImage }));

  it(`every valid corpus NixImage (${images.length}): each spec string is one argv element right after its flag`, () => {
    const problems: string[] = [];
    let checked = 0;
    for (const { name, image } of images) {
      const spec = image.spec;
      for (const kind of spec.warm ? (["Image", "Warm"] as const) : (["Image"] as const)) {
        const job = builderJob({
          image: { ...image, metadata: { ...image.metadata, name: "web", namespace: "shop", uid: "u" } },
          kind,
          number: 1,
          reasons: ["SpecChanged"],
          flake: spec.flake,
          storeVolume: "niximage-store-1",
          specHash: "0",
          builderHash: "0",
          config,
        });
        const pod = job.spec!.template.spec!;
        const argvs = [...(pod.initContainers ?? []), ...pod.containers].map((c) => ({ name: c.name, argv: [...(c.command ?? []), ...(c.args ?? [])] }));
        const expected: [flag: string, value: string][] = [
          ["--flake", spec.flake],
          ["--attribute", spec.attribute],
          ...(kind === "Warm" ? (spec.warm?.attributes ?? []).map((a) => ["--extra-attribute", a] as [string, string]) : []),
          ...(kind === "Image" ? (spec.image.tags ?? []).map((t) => ["--tag", t] as [string, string]) : []),
          ...(spec.build.nixConfig?.substituters ?? []).map((u) => ["--substituter", u] as [string, string]),
          ...(spec.build.nixConfig?.trustedPublicKeys ?? []).map((k) => ["--trusted-public-key", k] as [string, string]),
        ];
        for (const [flag, value] of expected) {
          const places = argvs.flatMap(({ name: step, argv }) => argv.flatMap((arg, i) => (arg === value ? [{ step, before: argv[i - 1] }] : [])));
          if (places.length === 0) problems.push(`${name} (${kind}): ${flag} ${value.slice(0, 40)} is in no step's argv`);
          for (const place of places) {
            checked++;
            if (place.before !== flag) problems.push(`${name} (${kind}): ${value.slice(0, 40)} follows ${place.before} in ${place.step}, not ${flag}`);
          }
          if (value.startsWith("-") || /\s/.test(value) || value.includes("\u0000"))
            problems.push(`${name}: ${flag} value ${JSON.stringify(value.slice(0, 40))} could read as an option`);
        }
        // No argv element of any step holds a line break or a NUL (JSON in --image-config is escaped).
        for (const { name: step, argv } of argvs) {
          for (const arg of argv)
            if (/[\n\r]/.test(arg) || arg.includes("\u0000")) problems.push(`${name} (${kind}): ${step} has an argv element with a line break or NUL`);
        }
      }
    }
    expect(problems).toEqual([]);
    expect(checked).toBeGreaterThan(images.length * 2);
    process.stderr.write(
      `argv injection: ${cases.length} attempts refused; ${images.length} valid NixImages, ${checked} spec strings each one argv element after its flag\n`,
    );
  });
});
