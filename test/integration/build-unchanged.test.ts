// Exact no-op with a real flake (issue 14): the builder's build-step and push-step as the Job runs
// them, with the --unchanged-out-path/--unchanged-digest the controller passes for a build that
// only a new commit called for. A README-only commit evaluates to the same output: the push step
// contacts no registry (0 blob uploads, no new tag) and says "unchanged". A monorepo with two
// NixImages (attributes web and api) on one repository: a commit changing api pushes api only.
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { pushResultSchema, type PushStepResult as PushResult } from "../../src/builder/step-results.ts";
import { completedUploads, runCli, uniqueRepo } from "../support/builder-fixtures.ts";
import { createGitRepo, type GitRepo } from "../support/git-fixtures.ts";
import { testbed } from "../support/kube.ts";

const bed = testbed();
const registryLog = join(bed.logDir, "registry-plain.log");

/** Two apps in one flake; each output depends only on its own directory's message. */
function monorepo(web: string, api: string, readme: string): Record<string, string> {
  const app = (name: string) => `derivation {
      name = "${name}-1.0";
      inherit system;
      builder = "/bin/sh";
      message = builtins.readFile ./${name}/message.txt;
      args = [ "-c" "/bin/mkdir -p $out/share && /usr/bin/printf '%s' \\"$message\\" > $out/share/message.txt" ];
    }`;
  const flake = `{
  outputs = { self }: let system = "x86_64-linux"; in {
    packages.\${system} = {
      web = ${app("web")};
      api = ${app("api")};
    };
  };
}
`;
  return {
    "flake.nix": flake,
    "flake.lock": JSON.stringify({ nodes: { root: {} }, root: "root", version: 7 }) + "\n",
    "README.md": readme,
    "web/message.txt": web,
    "api/message.txt": api,
  };
}

let repo: GitRepo;
let work = "";
const repositories = { web: uniqueRepo("mono-web"), api: uniqueRepo("mono-api") };

beforeAll(async () => {
  repo = await createGitRepo(monorepo("web v1", "api v1", "# shop\n"), { prefix: "monorepo" });
  work = join(bed.tmpDir, "build-unchanged");
  await mkdir(work, { recursive: true });
});

/** build-step + push-step of one app at the repository's current commit, as the builder Job runs them. */
async function buildAndPush(app: "web" | "api", step: string, inUse?: PushResult): Promise<PushResult> {
  const dir = join(work, `${app}-${step}`);
  const flake = `${repo.flakeUrl}?ref=refs/heads/${repo.branch}&rev=${repo.rev}`;
  const built = await runCli(bed, ["build-step", "--flake", flake, "--attribute", app, "--out", dir]);
  expect(built.code, built.stderr).toBe(0);
  const tm = join(work, `${app}-${step}-tm`);
  const args = ["push-step", "--from", dir, "--image", `${bed.registry.plain.host}/${repositories[app]}`, "--plain-http", "--termination-message", tm];
  if (inUse) args.push("--unchanged-out-path", inUse.outPath!, "--unchanged-digest", inUse.digest);
  const pushed = await runCli(bed, args, { env: { PATH: "/nonexistent" } });
  expect(pushed.code, pushed.stderr).toBe(0);
  return pushResultSchema.parse(JSON.parse(await readFile(tm, "utf8")));
}

async function tags(repository: string): Promise<string[]> {
  const res = await fetch(`${bed.registry.plain.url}/v2/${repository}/tags/list`);
  return ((await res.json()) as { tags: string[] }).tags.sort();
}

describe("exact no-op with a real flake", () => {
  it("a README-only commit pushes nothing; a commit to one app of a monorepo pushes that app only", async () => {
    const web1 = await buildAndPush("web", "1");
    const api1 = await buildAndPush("api", "1");
    for (const r of [web1, api1]) {
      expect(r.unchanged).toBeUndefined();
      expect(r.outPath).toMatch(/^\/nix\/store\/[0-9a-z]{32}-(web|api)-1\.0$/);
    }
    // README only: both outputs stay; nothing reaches the registry.
    await repo.commit({ "README.md": "# shop\n\nNow with a README.\n" });
    // Baselines once the registry has logged the first pushes (it logs just after answering; a
    // whole build-step of the other app lies in between). The SBOM/provenance referrers and
    // signature tags of the first pushes are part of them.
    const uploads = { web: completedUploads(registryLog, repositories.web), api: 0 };
    const tagsBefore = { web: await tags(repositories.web), api: await tags(repositories.api) };
    const web2 = await buildAndPush("web", "2", web1);
    uploads.api = completedUploads(registryLog, repositories.api);
    const api2 = await buildAndPush("api", "2", api1);
    for (const [r, first] of [
      [web2, web1],
      [api2, api1],
    ] as const) {
      expect(r).toMatchObject({ unchanged: true, digest: first.digest, outPath: first.outPath, tags: [], bytesPushed: 0, layers: { pushed: 0, skipped: 0 } });
      expect(r.revision?.rev).toBe(repo.rev);
    }
    expect(completedUploads(registryLog, repositories.web)).toBe(uploads.web);
    expect(completedUploads(registryLog, repositories.api)).toBe(uploads.api);
    expect({ web: await tags(repositories.web), api: await tags(repositories.api) }).toEqual(tagsBefore);

    // api changes: api is pushed (a new digest), web is unchanged.
    await repo.commit({ "api/message.txt": "api v2" });
    const web3 = await buildAndPush("web", "3", web1);
    const api3 = await buildAndPush("api", "3", api1);
    expect(web3).toMatchObject({ unchanged: true, digest: web1.digest, bytesPushed: 0 });
    expect(api3.unchanged).toBeUndefined();
    expect(api3.digest).not.toBe(api1.digest);
    expect(api3.outPath).not.toBe(api1.outPath);
    expect(api3.layers.pushed).toBeGreaterThan(0);
    expect(completedUploads(registryLog, repositories.web)).toBe(uploads.web);
    expect(uploads.web).toBeGreaterThanOrEqual(2); // the first push: one layer and the config at least
    expect(await tags(repositories.web)).toEqual(tagsBefore.web);
    expect(await tags(repositories.api)).toEqual(expect.arrayContaining([...tagsBefore.api, api3.tags[0]]));
  });
});
