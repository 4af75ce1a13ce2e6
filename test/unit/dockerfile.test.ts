// The Dockerfiles cannot be built here (there is no Docker engine and no registry access), so
// this test parses them with a small Dockerfile reader and checks what matters for a release:
// multi-stage, bases pinned by version, the non-root user and entrypoint of the operator image,
// no secrets and no remote ADD, and a build context (.dockerignore) that holds every file the
// Dockerfiles copy and nothing else.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const repo = fileURLToPath(new URL("../../", import.meta.url));

interface Instruction {
  keyword: string;
  /** Everything after the keyword, continuation lines joined with a space. */
  args: string;
  /** `--name=value` flags at the start of args (COPY --from, RUN --mount, FROM --platform). */
  flags: Record<string, string>;
  /** The exec (JSON array) form, when args is one. */
  json?: string[];
  /** Args after the flags, split on white space (shell form). */
  words: string[];
  line: number;
}

interface Stage {
  /** The FROM image with ARGs expanded. */
  base: string;
  name?: string;
  instructions: Instruction[];
}

interface Dockerfile {
  directives: Record<string, string>;
  comments: string[];
  /** ARGs declared before the first FROM, with their defaults. */
  globalArgs: Record<string, string | undefined>;
  stages: Stage[];
  all: Instruction[];
}

/** Expands $VAR, ${VAR} and ${VAR:-default} from `vars`; unknown variables become "". */
function expand(text: string, vars: Record<string, string | undefined>): string {
  return text.replace(
    /\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))/g,
    (_m, braced: string | undefined, fallback: string | undefined, bare: string | undefined) => {
      const value = vars[(braced ?? bare)!];
      return value !== undefined && value !== "" ? value : (fallback ?? "");
    },
  );
}

function parseDockerfile(text: string): Dockerfile {
  const lines = text.split("\n");
  const directives: Record<string, string> = {};
  const comments: string[] = [];
  const all: Instruction[] = [];
  let inDirectives = true;
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!;
    const trimmed = raw.trim();
    if (trimmed === "") {
      inDirectives = false;
      continue;
    }
    if (trimmed.startsWith("#")) {
      const directive = /^#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$/.exec(trimmed);
      if (inDirectives && directive) directives[directive[1]!.toLowerCase()] = directive[2]!;
      else comments.push(trimmed.replace(/^#\s?/, ""));
      inDirectives = false;
      continue;
    }
    inDirectives = false;
    const start = i;
    let joined = trimmed;
    // A trailing backslash continues the instruction; comment lines inside it are dropped.
    while (joined.endsWith("\\") && i + 1 < lines.length) {
      joined = joined.slice(0, -1).trimEnd();
      let next = lines[++i]!.trim();
      while (next.startsWith("#") && i + 1 < lines.length) next = lines[++i]!.trim();
      joined = `${joined} ${next}`;
    }
    const match = /^([A-Za-z]+)\s*(.*)$/.exec(joined);
    if (!match) throw new Error(`line ${start + 1}: not an instruction: ${joined}`);
    const keyword = match[1]!.toUpperCase();
    let rest = match[2]!;
    const flags: Record<string, string> = {};
    for (;;) {
      const flag = /^--([a-z-]+)(?:=(\S*))?\s*/.exec(rest);
      if (!flag) break;
      flags[flag[1]!] = flag[2] ?? "true";
      rest = rest.slice(flag[0].length);
    }
    let json: string[] | undefined;
    if (rest.startsWith("[")) {
      try {
        const parsed: unknown = JSON.parse(rest);
        if (Array.isArray(parsed) && parsed.every((p) => typeof p === "string")) json = parsed as string[];
      } catch {
        // shell form that happens to start with "["
      }
    }
    all.push({ keyword, args: rest, flags, ...(json ? { json } : {}), words: rest.split(/\s+/).filter(Boolean), line: start + 1 });
  }

  const globalArgs: Record<string, string | undefined> = {};
  const stages: Stage[] = [];
  for (const instruction of all) {
    if (instruction.keyword === "FROM") {
      const [image, as, name] = instruction.words;
      if (!image) throw new Error(`line ${instruction.line}: FROM without an image`);
      if (as !== undefined && as.toUpperCase() !== "AS") throw new Error(`line ${instruction.line}: FROM ${instruction.args}`);
      stages.push({ base: expand(image, globalArgs), ...(name ? { name } : {}), instructions: [] });
    } else if (stages.length === 0) {
      if (instruction.keyword !== "ARG") throw new Error(`line ${instruction.line}: ${instruction.keyword} before the first FROM`);
      const [key, ...value] = instruction.args.split("=");
      globalArgs[key!.trim()] = value.length ? value.join("=").trim() : undefined;
    } else {
      stages.at(-1)!.instructions.push(instruction);
    }
  }
  return { directives, comments, globalArgs, stages, all };
}

function load(path: string): Dockerfile {
  return parseDockerfile(readFileSync(join(repo, path), "utf8"));
}

/** `name[:tag][@digest]` of an image reference. */
function imageParts(ref: string): { name: string; tag?: string; digest?: string } {
  const [withoutDigest, digest] = ref.split("@") as [string, string | undefined];
  const slash = withoutDigest.lastIndexOf("/");
  const colon = withoutDigest.lastIndexOf(":");
  const hasTag = colon > slash;
  return {
    name: hasTag ? withoutDigest.slice(0, colon) : withoutDigest,
    ...(hasTag ? { tag: withoutDigest.slice(colon + 1) } : {}),
    ...(digest ? { digest } : {}),
  };
}

function final(file: Dockerfile): Stage {
  return file.stages.at(-1)!;
}

function instructions(stage: Stage, keyword: string): Instruction[] {
  return stage.instructions.filter((i) => i.keyword === keyword);
}

function lastUser(stage: Stage): string | undefined {
  return instructions(stage, "USER").at(-1)?.args.trim();
}

const secretWord = /(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL|AUTH)/i;

/** Checks every Dockerfile gets. */
function commonChecks(path: string): void {
  const file = load(path);
  const stageNames = new Set(file.stages.map((s) => s.name).filter(Boolean));

  it("is multi-stage, the final stage copying from a build stage", () => {
    expect(file.stages.length).toBeGreaterThanOrEqual(2);
    const fromStages = instructions(final(file), "COPY")
      .map((c) => c.flags.from)
      .filter(Boolean);
    expect(fromStages.length).toBeGreaterThan(0);
    for (const from of fromStages) expect(stageNames.has(from!), `COPY --from=${from} names a stage`).toBe(true);
  });

  it("pins every base image by version (no :latest, no missing tag, no floating major)", () => {
    for (const stage of file.stages) {
      if (stageNames.has(stage.base)) continue;
      const { tag, digest } = imageParts(stage.base);
      expect(stage.base, "base with ARGs expanded").not.toContain("$");
      if (digest) expect(digest).toMatch(/^sha256:[a-f0-9]{64}$/);
      expect(tag, `${stage.base} has a tag`).toBeDefined();
      expect(tag).not.toMatch(/latest|lts|current|stable/i);
      // major.minor.patch (node:24.21.0-bookworm-slim, nixos/nix:2.28.3)
      expect(tag, `${stage.base} pins a full version`).toMatch(/^v?\d+\.\d+\.\d+/);
    }
  });

  it("explains how to pin the bases by digest", () => {
    const text = file.comments.join("\n");
    expect(text).toMatch(/@sha256:<digest/);
    expect(text).toMatch(/skopeo inspect --format '\{\{\.Digest\}\}' docker:\/\//);
  });

  it("uses the BuildKit Dockerfile syntax directive", () => {
    expect(file.directives.syntax).toBe("docker/dockerfile:1");
  });

  it("adds no remote files and bakes in no secrets", () => {
    expect(
      file.all.filter((i) => i.keyword === "ADD"),
      "COPY instead of ADD",
    ).toEqual([]);
    for (const i of file.all) {
      expect(i.args, `line ${i.line}`).not.toMatch(/\b(curl|wget)\b[^|]*\|\s*(ba)?sh/);
      if (i.keyword === "ENV" || i.keyword === "ARG") {
        const names = i.args.split(/\s+/).map((w) => w.split("=")[0]!);
        for (const name of names) expect(name, `line ${i.line}: ${i.keyword} ${name}`).not.toMatch(secretWord);
      }
    }
  });

  it("builds with npm ci from the lock file, compiles, and keeps production dependencies only", () => {
    const runs = file.all
      .filter((i) => i.keyword === "RUN")
      .map((i) => i.args)
      .join("\n");
    expect(runs).toContain("npm ci --ignore-scripts");
    expect(runs).toContain("npm run build");
    expect(runs).toContain("npm prune --omit=dev");
    const copied = file.all.filter((i) => i.keyword === "COPY" && !i.flags.from).flatMap((i) => i.words.slice(0, -1));
    expect(copied).toEqual(expect.arrayContaining(["package.json", "package-lock.json"]));
  });

  it("puts the nix-image-operator command on PATH (builder Job steps run it by name)", () => {
    const runs = instructions(final(file), "RUN")
      .map((i) => i.args)
      .join("\n");
    expect(runs).toContain("ln -s /app/dist/cli/main.js /usr/local/bin/nix-image-operator");
    // The symlink runs main.js through its `#!/usr/bin/env node` line.
    expect(readFileSync(join(repo, "src/cli/main.ts"), "utf8").split("\n")[0]).toBe("#!/usr/bin/env node");
    const build = file.all
      .filter((i) => i.keyword === "RUN")
      .map((i) => i.args)
      .join("\n");
    expect(build).toContain("chmod 0755 dist/cli/main.js");
  });

  it("copies only files that exist and that .dockerignore lets into the build context", () => {
    const allowed = readFileSync(join(repo, ".dockerignore"), "utf8")
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith("#"));
    expect(allowed[0], ".dockerignore is an allowlist").toBe("*");
    const include = allowed.filter((l) => l.startsWith("!")).map((l) => l.slice(1).replace(/\/$/, ""));
    for (const copy of file.all.filter((i) => i.keyword === "COPY" && !i.flags.from)) {
      for (const source of copy.words.slice(0, -1)) {
        expect(existsSync(join(repo, source)), `${path}:${copy.line}: ${source} exists`).toBe(true);
        const clean = source.replace(/^\.\//, "").replace(/\/$/, "");
        expect(
          include.some((p) => clean === p || clean.startsWith(`${p}/`)),
          `${source} is in .dockerignore's allowlist`,
        ).toBe(true);
      }
    }
  });
}

describe("Dockerfile parser", () => {
  it("reads directives, comments, continuations, flags, JSON form and ARG expansion", () => {
    const file = parseDockerfile(
      [
        "# syntax=docker/dockerfile:1",
        "# a comment",
        "ARG BASE=debian:12.8",
        "ARG TAG",
        "FROM ${BASE} AS build",
        "RUN echo a \\",
        "  # inside",
        "  && echo b",
        "FROM $BASE",
        "COPY --from=build --chown=1:1 /a /b",
        'ENTRYPOINT ["x", "y"]',
        "FROM ${TAG:-alpine:3.20.3}",
      ].join("\n"),
    );
    expect(file.directives).toEqual({ syntax: "docker/dockerfile:1" });
    expect(file.comments).toEqual(["a comment"]);
    expect(file.globalArgs).toEqual({ BASE: "debian:12.8", TAG: undefined });
    expect(file.stages.map((s) => [s.base, s.name])).toEqual([
      ["debian:12.8", "build"],
      ["debian:12.8", undefined],
      ["alpine:3.20.3", undefined],
    ]);
    expect(file.stages[0]!.instructions[0]!.args).toBe("echo a && echo b");
    const copy = file.stages[1]!.instructions[0]!;
    expect(copy.flags).toEqual({ from: "build", chown: "1:1" });
    expect(copy.words).toEqual(["/a", "/b"]);
    expect(file.stages[1]!.instructions[1]!.json).toEqual(["x", "y"]);
  });

  it("splits image references", () => {
    expect(imageParts("node:24.21.0-bookworm-slim")).toEqual({ name: "node", tag: "24.21.0-bookworm-slim" });
    expect(imageParts("localhost:5000/x")).toEqual({ name: "localhost:5000/x" });
    expect(imageParts(`nixos/nix:2.28.3@sha256:${"a".repeat(64)}`)).toEqual({ name: "nixos/nix", tag: "2.28.3", digest: `sha256:${"a".repeat(64)}` });
  });
});

describe("Dockerfile (operator image)", () => {
  commonChecks("Dockerfile");
  const file = load("Dockerfile");
  const runtime = final(file);

  it("builds on Node 24, pinned by version", () => {
    for (const stage of file.stages) expect(stage.base).toMatch(/^node:24\.\d+\.\d+-/);
  });

  it("runs as uid/gid 65532 in the final stage", () => {
    expect(lastUser(runtime)).toBe("65532:65532");
    // nothing after USER switches back
    const user = runtime.instructions.findIndex((i) => i.keyword === "USER");
    expect(runtime.instructions.slice(user).filter((i) => i.keyword === "RUN")).toEqual([]);
  });

  it("starts node /app/dist/cli/main.js (exec form)", () => {
    expect(instructions(runtime, "ENTRYPOINT").at(-1)?.json).toEqual(["node", "/app/dist/cli/main.js"]);
    const copied = instructions(runtime, "COPY").map((c) => c.words.at(-1));
    expect(copied).toEqual(expect.arrayContaining(["./dist", "./node_modules", "./package.json"]));
    expect(instructions(runtime, "WORKDIR").at(-1)?.args).toBe("/app");
  });

  it("is read-only-root friendly: HOME and TMPDIR in /tmp, no VOLUME", () => {
    const env = instructions(runtime, "ENV")
      .map((e) => e.args)
      .join(" ");
    expect(env).toMatch(/HOME=\/tmp/);
    expect(env).toMatch(/TMPDIR=\/tmp/);
    expect(instructions(runtime, "VOLUME")).toEqual([]);
  });

  it("ships no package manager and no source or dev dependencies in the final stage", () => {
    const runs = instructions(runtime, "RUN")
      .map((i) => i.args)
      .join("\n");
    expect(runs).toMatch(/rm -rf \/usr\/local\/lib\/node_modules \/usr\/local\/bin\/npm/);
    expect(instructions(runtime, "COPY").every((c) => c.flags.from === "build")).toBe(true);
  });
});

describe("builder/Dockerfile (default Nix builder image)", () => {
  commonChecks("builder/Dockerfile");
  const file = load("builder/Dockerfile");
  const builder = final(file);

  it("takes Nix from the official image, Node 24 for the CLI, both pinned", () => {
    const bases = file.stages.map((s) => s.base);
    expect(bases.some((b) => /^nixos\/nix:2\.\d+\.\d+$/.test(b))).toBe(true);
    expect(builder.base).toMatch(/^node:24\.\d+\.\d+-/);
  });

  it("copies the Nix store and database, and configures Nix for a pod", () => {
    const copies = instructions(builder, "COPY");
    expect(copies.some((c) => c.flags.from === "nix" && c.words.join(" ") === "/nix /nix")).toBe(true);
    expect(copies.some((c) => c.words.join(" ") === "builder/nix.conf /etc/nix/nix.conf")).toBe(true);
    const conf = readFileSync(join(repo, "builder/nix.conf"), "utf8");
    expect(conf).toMatch(/^experimental-features = nix-command flakes$/m);
    expect(conf).toMatch(/^build-users-group = nixbld$/m);
    expect(conf).toMatch(/^sandbox = false$/m);
    // The operator's own safety settings are passed per command; nix.conf must not loosen them.
    expect(conf).not.toMatch(/^(accept-flake-config|allow-import-from-derivation)\s*=\s*true/m);
    const runs = instructions(builder, "RUN")
      .map((r) => r.args)
      .join("\n");
    expect(runs).toContain("groupadd --system --gid 30000 nixbld");
    expect(runs).toContain("test -s /nix/var/nix/db/schema");
  });

  it("has git, ssh and CA certificates, and Nix on PATH after Debian's tools", () => {
    const runs = instructions(builder, "RUN")
      .map((r) => r.args)
      .join("\n");
    expect(runs).toMatch(/apt-get install -y --no-install-recommends ca-certificates git openssh-client/);
    const env = instructions(builder, "ENV")
      .map((e) => e.args)
      .join(" ");
    expect(env).toMatch(/PATH=\/usr\/local\/sbin:\/usr\/local\/bin:.*:\/nix\/var\/nix\/profiles\/default\/bin/);
    expect(env).toContain("SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt");
  });

  it("states its user explicitly (root: store volumes are root-owned; builds drop to nixbld)", () => {
    expect(lastUser(builder)).toBe("0:0");
    expect(instructions(builder, "ENTRYPOINT").at(-1)?.json).toEqual(["nix-image-operator"]);
  });
});
