// Issue 12, item 3: layer-cache poisoning. The push step trusts a cache hit (store-path set ->
// blob digest) without reading the layer's bytes. Whoever can write the cache directory plants
// entries that map a layer's store paths to ANOTHER blob of the same repository (so the registry's
// HEAD check passes); the pushed manifest must stay what the closure gives. The control case
// (an attacker who knows the MAC key) shows that the forgery is real and would change the image.
import { createHmac } from "node:crypto";
import { spawnSync } from "node:child_process";
import { chmod, chown, mkdir, readFile, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { testbed } from "../support/kube.ts";
import type { GitRepo } from "../support/git-fixtures.ts";
import { cliPath, fixtureRepo, lastJson, rawManifest, repoRoot, runCli, tlsAccess, uniqueRepo } from "../support/builder-fixtures.ts";

const bed = testbed();
const tls = bed.registry.tls;
let hello: GitRepo;
let work = "";
let built = "";

beforeAll(async () => {
  hello = await fixtureRepo("hello");
  work = join(bed.tmpDir, "layer-cache-forgery");
  await mkdir(work, { recursive: true });
  built = join(work, "hello");
  const b = await runCli(bed, ["build-step", "--flake", hello.flakeUrl, "--attribute", "default", "--out", built]);
  expect(b.code, b.stderr).toBe(0);
});

interface Entry {
  digest: string;
  size: number;
  diffId: string;
  mediaType: string;
  seenIn?: string;
  mac?: string;
}

async function push(repository: string, cache: string): Promise<{ digest: string; layers: { pushed: number; skipped: number } }> {
  const r = await runCli(
    bed,
    [
      "push-step",
      "--from",
      built,
      "--image",
      `${tls.host}/${repository}`,
      "--auth-file",
      tls.authFile,
      "--ca-file",
      tls.caFile,
      "--max-layers",
      "3",
      "--layer-cache",
      cache,
      "--json",
    ],
    { env: { PATH: "/nonexistent" } },
  );
  expect(r.code, r.stderr).toBe(0);
  return lastJson(r.stdout);
}

async function entries(cache: string): Promise<Map<string, Entry>> {
  const out = new Map<string, Entry>();
  for (const f of await readdir(cache)) if (f.endsWith(".json")) out.set(f, JSON.parse(await readFile(join(cache, f), "utf8")) as Entry);
  return out;
}

/** Rotates the entries' blobs: layer i's store paths now name layer i+1's blob (all in the repository). */
async function forge(cache: string, mac: (file: string, e: Entry) => string | undefined): Promise<number> {
  const all = [...(await entries(cache))].sort(([a], [b]) => a.localeCompare(b));
  for (const [i, [file]] of all.entries()) {
    const other = all[(i + 1) % all.length]![1];
    const forged: Entry = {
      digest: other.digest,
      size: other.size,
      diffId: other.diffId,
      mediaType: other.mediaType,
      ...(other.seenIn ? { seenIn: other.seenIn } : {}),
    };
    const m = mac(file, forged);
    await writeFile(join(cache, file), JSON.stringify(m === undefined ? forged : { ...forged, mac: m }));
  }
  return all.length;
}

describe("layer cache forgery (issue 12 item 3)", () => {
  it("forged entries (no MAC, a copied MAC, a MAC under a guessed key) do not change the pushed manifest", async () => {
    const cache = join(work, "cache-a");
    const repository = uniqueRepo("forgery");
    const first = await push(repository, cache);
    const manifest = await rawManifest(`${tls.host}/${repository}@${first.digest}`, tlsAccess(bed));
    const before = await entries(cache);
    expect(before.size).toBe(3);

    const attempts: [string, (file: string, e: Entry) => string | undefined][] = [
      ["no MAC", () => undefined],
      ["the entry's old MAC", (file) => before.get(file)!.mac],
      [
        "a MAC under a guessed key",
        (file, e) =>
          createHmac("sha256", Buffer.alloc(32))
            .update(JSON.stringify([1, file.slice(0, 64), e.digest, e.size, e.diffId, e.mediaType, e.seenIn ?? ""]))
            .digest("hex"),
      ],
    ];
    for (const [what, mac] of attempts) {
      expect(await forge(cache, mac)).toBe(3);
      const again = await push(repository, cache);
      expect(again.digest, what).toBe(first.digest);
      expect(await rawManifest(`${tls.host}/${repository}@${again.digest}`, tlsAccess(bed)), what).toEqual(manifest);
      // The forged entries were misses: each layer was read again (and the entry rewritten).
      expect(again.layers.pushed, what).toBe(3);
      expect(await entries(cache), what).toEqual(before);
    }
  });

  it("control: with the MAC key (what the push step's own uid can read) the same forgery would change the image", async () => {
    const cache = join(work, "cache-b");
    const repository = uniqueRepo("forgery-control");
    const first = await push(repository, cache);
    const key = await readFile(join(cache, "entry-key"));
    await forge(cache, (file, e) =>
      createHmac("sha256", key)
        .update(JSON.stringify([1, file.slice(0, 64), e.digest, e.size, e.diffId, e.mediaType, e.seenIn ?? ""]))
        .digest("hex"),
    );
    const poisoned = await push(repository, cache);
    expect(poisoned.digest).not.toBe(first.digest);
    expect(poisoned.layers).toMatchObject({ pushed: 0, skipped: 3 });
  });

  it("a streamLayeredImage script that would run as the uid that owns the cache key is refused; run as nobody it is not", async () => {
    const stream = await fixtureRepo("stream-layered");
    const dir = join(work, "stream");
    const b = await runCli(bed, ["build-step", "--flake", stream.flakeUrl, "--attribute", "default", "--out", dir]);
    expect(b.code, b.stderr).toBe(0);
    const image = `${bed.registry.plain.host}/${uniqueRepo("stream-cache")}`;

    // As in the builder Job: the push step runs as 65532 and owns the layer cache, so a script it
    // runs (as 65532 too) could read the MAC key and forge entries.
    const cache = join(work, "cache-65532");
    await mkdir(cache, { recursive: true });
    await chown(cache, 65532, 65532);
    await chmod(work, 0o755);
    const tm = join(work, "stream-tm");
    await writeFile(tm, "");
    await chown(tm, 65532, 65532);
    const args = ["push-step", "--from", dir, "--image", image, "--plain-http", "--layer-cache", cache, "--termination-message", tm];
    const asPushUser = spawnSync("setpriv", ["--reuid", "65532", "--regid", "65532", "--clear-groups", process.execPath, cliPath, ...args], {
      cwd: repoRoot,
      env: { PATH: "/usr/bin:/bin", HOME: "/tmp" },
      encoding: "utf8",
    });
    expect(asPushUser.status, asPushUser.stderr).toBe(1);
    expect(await readFile(tm, "utf8")).toMatch(
      /refusing to run the streamLayeredImage script .* could read the push credentials or the layer cache key .*entry-key as uid 65532/,
    );

    // As root the push step runs the script as 65534, which cannot read the key (0600, root's).
    const r = await runCli(bed, ["push-step", "--from", dir, "--image", image, "--plain-http", "--layer-cache", join(work, "cache-root"), "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(lastJson<{ format: string }>(r.stdout).format).toBe("stream-layered");
  });
});
