// prepare-store with fake /nix roots in temp dirs: seeding copies store + db + var preserving
// modes, symlinks, hard links and mtimes; a seeded volume is only checked; a schema mismatch
// fails loudly; an interrupted seed is redone; a database without a schema file is not touched.
import { chmod, link, lstat, mkdir, mkdtemp, readFile, readlink, readdir, rm, stat, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { prepareStore, StoreIncompatibleError } from "../../src/builder/prepare-store.ts";
import { prepareStoreCommand } from "../../src/cli/prepare-store-command.ts";
import { createLogger } from "../../src/log/logger.ts";

const H1 = "0123456789abcdfghijklmnpqrsvwxyz";
const H2 = "zyxwvsrqpnmlkjihgfdcba9876543210";

let work = "";

beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), "prepare-store-"));
});

afterEach(async () => {
  // Store directories are read-only: make them writable before removing.
  const walk = async (p: string): Promise<void> => {
    const st = await lstat(p).catch(() => undefined);
    if (!st?.isDirectory()) return;
    await chmod(p, 0o755);
    for (const n of await readdir(p)) await walk(join(p, n));
  };
  await walk(work);
  await rm(work, { recursive: true, force: true });
});

/** A fake image /nix: two store paths (read-only, mtime 1, a symlink, a hard link), db, var. */
async function fakeNixRoot(schema = "10"): Promise<string> {
  const root = join(work, "image-nix");
  const a = join(root, "store", `${H1}-busybox`);
  const b = join(root, "store", `${H2}-hello`);
  await mkdir(join(a, "bin"), { recursive: true });
  await mkdir(join(b, "bin"), { recursive: true });
  await writeFile(join(a, "bin", "busybox"), "#!fake busybox\n");
  await chmod(join(a, "bin", "busybox"), 0o555);
  await symlink("busybox", join(a, "bin", "sh"));
  await writeFile(join(b, "bin", "hello"), "#!/bin/sh\necho hello\n");
  await chmod(join(b, "bin", "hello"), 0o555);
  // nix-store --optimise style: the same file hard-linked under .links and in a path.
  await mkdir(join(root, "store", ".links"), { recursive: true });
  await writeFile(join(root, "store", ".links", "1abc"), "shared bytes\n");
  await chmod(join(root, "store", ".links", "1abc"), 0o444);
  await link(join(root, "store", ".links", "1abc"), join(b, "shared.txt"));
  for (const p of [join(a, "bin", "busybox"), join(b, "bin", "hello"), join(b, "shared.txt")]) await utimes(p, 1, 1);
  for (const d of [join(a, "bin"), a, join(b, "bin"), b]) {
    await chmod(d, 0o555);
    await utimes(d, 1, 1);
  }
  await mkdir(join(root, "var", "nix", "db"), { recursive: true });
  await mkdir(join(root, "var", "nix", "gcroots"), { recursive: true });
  await writeFile(join(root, "var", "nix", "db", "schema"), schema);
  await writeFile(join(root, "var", "nix", "db", "db.sqlite"), "SQLite format 3\0fake");
  await symlink(`/nix/store/${H2}-hello`, join(root, "var", "nix", "gcroots", "hello"));
  return root;
}

describe("prepareStore", () => {
  it("seeds an empty volume with a faithful copy of the image's /nix", async () => {
    const nixRoot = await fakeNixRoot();
    const volume = join(work, "volume");
    await mkdir(join(volume, "lost+found"), { recursive: true });
    const result = await prepareStore({ volume, nixRoot });
    expect(result).toMatchObject({ action: "seeded", schema: "10" });
    expect(result.entries).toBeGreaterThan(10);

    const a = join(volume, "store", `${H1}-busybox`);
    const b = join(volume, "store", `${H2}-hello`);
    expect(await readFile(join(b, "bin", "hello"), "utf8")).toBe("#!/bin/sh\necho hello\n");
    expect((await stat(join(b, "bin", "hello"))).mode & 0o7777).toBe(0o555);
    expect((await stat(a)).mode & 0o7777).toBe(0o555);
    expect((await stat(join(b, "bin", "hello"))).mtimeMs).toBe(1000);
    expect((await stat(b)).mtimeMs).toBe(1000);
    expect(await readlink(join(a, "bin", "sh"))).toBe("busybox");
    expect(await readlink(join(volume, "var", "nix", "gcroots", "hello"))).toBe(`/nix/store/${H2}-hello`);
    // Hard links stay hard links (no doubled space on the volume).
    const l1 = await stat(join(volume, "store", ".links", "1abc"));
    const l2 = await stat(join(b, "shared.txt"));
    expect(l1.ino).toBe(l2.ino);
    expect(l1.nlink).toBe(2);
    expect(await readFile(join(volume, "var", "nix", "db", "schema"), "utf8")).toBe("10");
    // No temporary directory left behind; foreign entries untouched.
    expect((await readdir(volume)).sort()).toEqual(["lost+found", "store", "var"]);
  });

  it("only checks a volume that is already seeded with the same schema", async () => {
    const nixRoot = await fakeNixRoot();
    const volume = join(work, "volume");
    await mkdir(volume);
    await prepareStore({ volume, nixRoot });
    await writeFile(join(volume, "var", "nix", "db", "marker"), "kept");
    const again = await prepareStore({ volume, nixRoot });
    expect(again).toEqual({ action: "checked", schema: "10" });
    expect(await readFile(join(volume, "var", "nix", "db", "marker"), "utf8")).toBe("kept");
  });

  it("fails loudly on a store of another Nix database schema", async () => {
    const nixRoot = await fakeNixRoot("10");
    const volume = join(work, "volume");
    await mkdir(join(volume, "var", "nix", "db"), { recursive: true });
    await writeFile(join(volume, "var", "nix", "db", "schema"), "7\n");
    const err = await prepareStore({ volume, nixRoot }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreIncompatibleError);
    expect((err as Error).message).toMatch(/schema version "7".*schema "10".*cannot share a store/);
    expect(await readFile(join(volume, "var", "nix", "db", "schema"), "utf8")).toBe("7\n");
  });

  it("redoes an interrupted seed (a store without a database)", async () => {
    const nixRoot = await fakeNixRoot();
    const volume = join(work, "volume");
    await mkdir(join(volume, "store", "partial-junk"), { recursive: true });
    await chmod(join(volume, "store", "partial-junk"), 0o555);
    await mkdir(join(volume, ".niximage-seed", "store"), { recursive: true });
    const result = await prepareStore({ volume, nixRoot });
    expect(result.action).toBe("seeded");
    expect((await readdir(join(volume, "store"))).sort()).toEqual([".links", `${H1}-busybox`, `${H2}-hello`]);
    expect((await readdir(volume)).sort()).toEqual(["store", "var"]);
  });

  it("refuses a database without a schema file, and an image without Nix", async () => {
    const nixRoot = await fakeNixRoot();
    const volume = join(work, "volume");
    await mkdir(join(volume, "var", "nix", "db"), { recursive: true });
    await writeFile(join(volume, "var", "nix", "db", "db.sqlite"), "x");
    await expect(prepareStore({ volume, nixRoot })).rejects.toThrow(/has a Nix database but no var\/nix\/db\/schema/);
    await expect(prepareStore({ volume, nixRoot: join(work, "nothing") })).rejects.toThrow(/no Nix database schema file/);
    await expect(prepareStore({ volume: join(work, "absent"), nixRoot })).rejects.toThrow(/not mounted/);
  });

  it("runs as the prepare-store command with a termination message", async () => {
    const nixRoot = await fakeNixRoot("10");
    const volume = join(work, "volume");
    await mkdir(join(volume, "var", "nix", "db"), { recursive: true });
    await writeFile(join(volume, "var", "nix", "db", "schema"), "9");
    const out: string[] = [];
    const err: string[] = [];
    const sink = (into: string[]) => ({ write: (s: string) => (into.push(s), true) }) as unknown as NodeJS.WritableStream;
    const tm = join(work, "termination-log");
    const code = await prepareStoreCommand.run({
      argv: ["--volume", volume, "--nix-root", nixRoot, "--termination-message", tm],
      stdout: sink(out),
      stderr: sink(err),
      logger: createLogger({ level: "silent" }),
      env: {},
      cwd: work,
      signal: new AbortController().signal,
    });
    expect(code).toBe(78);
    expect(err.join("")).toMatch(/^error: the store volume .* schema version "9", written by an older Nix/);
    expect(await readFile(tm, "utf8")).toMatch(/schema version "9"/);

    await rm(join(volume, "var"), { recursive: true });
    const ok = await prepareStoreCommand.run({
      argv: ["--volume", volume, "--nix-root", nixRoot],
      stdout: sink(out),
      stderr: sink(err),
      logger: createLogger({ level: "silent" }),
      env: {},
      cwd: work,
      signal: new AbortController().signal,
    });
    expect(ok).toBe(0);
    expect(JSON.parse(out.join("").trim())).toMatchObject({ action: "seeded", schema: "10" });
  });
});
