import { describe, expect, it } from "vitest";
import { classifyNixFailure, NixError, redactUrlCredentials } from "../../src/nix/nix-error.ts";

// Messages as Nix 2.8 printed them (level-0 `msg`, colour removed, `error: ` prefix dropped) and
// plain stderr lines (git's own output).
const cases: Array<{ name: string; errors: string[]; text?: string[]; evalOnly?: boolean; kind: string; reason: RegExp; drvPath?: string }> = [
  {
    name: "missing attribute",
    errors: [
      "flake 'git+http://127.0.0.1:4000/broken.git' does not provide attribute 'packages.x86_64-linux.default', 'legacyPackages.x86_64-linux.default' or 'default'",
    ],
    evalOnly: true,
    kind: "attribute-missing",
    reason: /does not provide attribute 'packages\.x86_64-linux\.default'/,
  },
  {
    name: "failed builder",
    errors: ["builder for '/nix/store/cx9y2q63jzccasnx89mgyszv0pj3ps30-exp-broken.drv' failed with exit code 3"],
    kind: "build-failed",
    reason: /failed with exit code 3/,
    drvPath: "/nix/store/cx9y2q63jzccasnx89mgyszv0pj3ps30-exp-broken.drv",
  },
  {
    name: "failed dependency",
    errors: [
      "builder for '/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-dep.drv' failed with exit code 1",
      "1 dependencies of derivation '/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-app.drv' failed to build",
    ],
    kind: "build-failed",
    reason: /dep\.drv' failed/,
    drvPath: "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-dep.drv",
  },
  {
    name: "git repository missing",
    errors: ["program 'git' failed with exit code 128"],
    text: ["fatal: repository 'http://127.0.0.1:4000/nope.git/' not found"],
    evalOnly: true,
    kind: "fetch-failed",
    reason: /fatal: repository .* not found[\s\S]*program 'git' failed/,
  },
  {
    name: "indirect ref with the registry disabled",
    errors: ["unable to download '': URL using bad/illegal format or missing URL (3)"],
    evalOnly: true,
    kind: "indirect-ref",
    reason: /unable to download ''/,
  },
  {
    name: "import from derivation",
    errors: [
      "cannot build '/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-gen.drv' during evaluation because the option 'allow-import-from-derivation' is disabled",
    ],
    evalOnly: true,
    kind: "ifd-disabled",
    reason: /allow-import-from-derivation/,
  },
  {
    name: "throw during evaluation",
    errors: ["broken fixture: attribute `throws` fails during evaluation (intentional)"],
    evalOnly: true,
    kind: "eval-failed",
    reason: /intentional/,
  },
  {
    name: "missing flake.nix",
    errors: ["source tree referenced by 'git+http://127.0.0.1:1/x.git?ref=master&rev=abc' does not contain a '/flake.nix' file"],
    evalOnly: true,
    kind: "not-a-flake",
    reason: /does not contain/,
  },
  {
    name: "missing flake.nix (Nix 2.8 wording)",
    errors: ["getting status of '/nix/store/jvsgjlx9afi3p41vxj724ycabqwl9j00-source/flake.nix': No such file or directory"],
    evalOnly: true,
    kind: "not-a-flake",
    reason: /flake\.nix': No such file/,
  },
  {
    name: "other system",
    errors: ["a 'aarch64-linux' with features {} is required to build '/nix/store/x.drv', but I am a 'x86_64-linux' with features {benchmark, big-parallel}"],
    kind: "unsupported-system",
    reason: /aarch64-linux/,
  },
  {
    name: "disk full",
    errors: ["writing to file: No space left on device"],
    kind: "no-space",
    reason: /No space left/,
  },
  {
    name: "unrecognised after realisation started",
    errors: ["something nobody expected"],
    evalOnly: false,
    kind: "unknown",
    reason: /something nobody expected/,
  },
];

describe("classifyNixFailure", () => {
  for (const c of cases) {
    it(c.name, () => {
      const r = classifyNixFailure(c.errors, c.text ?? [], c.evalOnly ?? false);
      expect(r.kind).toBe(c.kind);
      expect(r.reason).toMatch(c.reason);
      expect(r.hint.length).toBeGreaterThan(20);
      if (c.drvPath) expect(r.drvPath).toBe(c.drvPath);
    });
  }

  it("falls back to the last plain line when Nix printed no error", () => {
    const r = classifyNixFailure([], ["", "Segmentation fault", ""], false);
    expect(r.kind).toBe("unknown");
    expect(r.reason).toBe("Segmentation fault");
  });
});

describe("NixError", () => {
  it("says what failed, why (with the builder's last lines) and what to do", () => {
    const e = new NixError({
      kind: "build-failed",
      what: "build git+http://127.0.0.1:1/b.git?rev=abc#fails",
      reason: "builder for '/nix/store/x-broken-fails.drv' failed with exit code 2",
      hint: "Fix the flake.",
      logTail: ["compiling widget.c", "widget.c:42: error: 'frobnicate' undeclared"],
      exitCode: 1,
    });
    expect(e.message).toBe(
      [
        "build git+http://127.0.0.1:1/b.git?rev=abc#fails failed: builder for '/nix/store/x-broken-fails.drv' failed with exit code 2",
        "last 2 log lines:\n  > compiling widget.c\n  > widget.c:42: error: 'frobnicate' undeclared",
        "What to do: Fix the flake.",
      ].join("\n"),
    );
    expect(e.summary()).toContain("(build-failed)");
    expect(e.summary()).not.toContain("\n");
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe("NixError");
  });

  it("redacts URL credentials everywhere", () => {
    const e = new NixError({
      kind: "fetch-failed",
      what: "lock flake git+https://oauth2:s3cr3t@gitlab.example.com/a/b.git",
      reason: "fatal: could not read from https://user:hunter2@gitlab.example.com/a/b.git",
      hint: "x",
      command: "nix flake metadata git+https://tok@h/a.git",
      logTail: ["remote: https://u:p@h/x"],
    });
    for (const s of [e.message, e.what, e.reason, e.command ?? "", ...e.logTail]) {
      expect(s).not.toMatch(/s3cr3t|hunter2|tok@|u:p@/);
    }
    expect(e.what).toContain("git+https://[redacted]@gitlab.example.com");
  });

  it("shortens the summary", () => {
    const e = new NixError({ kind: "unknown", what: "x", reason: "y".repeat(5000), hint: "z" });
    expect(e.summary(100).length).toBe(100);
  });
});

describe("redactUrlCredentials", () => {
  it("keeps URLs without credentials and e-mail-like text", () => {
    expect(redactUrlCredentials("github:acme/shop https://h/x git@github.com:a/b")).toBe("github:acme/shop https://h/x git@github.com:a/b");
    expect(redactUrlCredentials("ssh://git@github.com/a/b")).toBe("ssh://[redacted]@github.com/a/b");
  });
});
