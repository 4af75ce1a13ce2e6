import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, loadOperatorConfig, parseOperatorConfig } from "../../src/config/operator-config.ts";

describe("operator config", () => {
  it("fills every default from an empty config", () => {
    const config = parseOperatorConfig({});
    expect(config.concurrency).toEqual({ builds: 4, reconcilers: 4 });
    expect(config.store).toMatchObject({ poolSize: 2, size: "20Gi", accessMode: "ReadWriteOncePod", keepSuccessful: 5 });
    expect(config.leaderElection).toMatchObject({ enabled: true, leaseDuration: "15s" });
    expect(config.flakeRefPolicy.allowedSchemes).toContain("github");
    expect(config.flakeRefPolicy.allowedSchemes).not.toContain("git+http");
    expect(config.namespaces).toEqual([]);
  });

  it.each([
    [{ concurrency: { builds: 0 } }, "concurrency.builds"],
    [{ store: { accessMode: "ReadWriteMany" } }, "store.accessMode"],
    [{ leaderElection: { leaseDuration: "soon" } }, "leaderElection.leaseDuration"],
    [{ registries: [{ host: "" }] }, "registries[0].host"],
    [{ logLevel: "loud" }, "logLevel"],
    [{ typo: true }, "typo"],
  ])("rejects %j naming %s", (raw, field) => {
    expect(() => parseOperatorConfig(raw)).toThrow(ConfigError);
    expect(() => parseOperatorConfig(raw)).toThrow(new RegExp(`${field.replace(/[[\].]/g, "\\$&")}: `));
  });

  it("loads a YAML file and applies environment overrides on top", async () => {
    const dir = await mkdtemp(join(tmpdir(), "nio-config-"));
    const file = join(dir, "config.yaml");
    await writeFile(file, "store:\n  poolSize: 3\nlogLevel: warn\nflakeRefPolicy:\n  allowedSchemes: [github, git+http]\n");
    const config = await loadOperatorConfig({ file, env: { LOG_LEVEL: "debug", WATCH_NAMESPACES: "a, b" } });
    expect(config.store.poolSize).toBe(3);
    expect(config.logLevel).toBe("debug");
    expect(config.namespaces).toEqual(["a", "b"]);
    expect(config.flakeRefPolicy.allowedSchemes).toEqual(["github", "git+http"]);
  });

  it("names the file when it is missing or not YAML", async () => {
    const dir = await mkdtemp(join(tmpdir(), "nio-config-"));
    await expect(loadOperatorConfig({ file: join(dir, "nope.yaml"), env: {} })).rejects.toThrow(/cannot read config file .*nope.yaml: ENOENT/);
    const bad = join(dir, "bad.yaml");
    await writeFile(bad, "store: [unclosed\n");
    await expect(loadOperatorConfig({ file: bad, env: {} })).rejects.toThrow(/bad.yaml is not valid YAML/);
  });
});
