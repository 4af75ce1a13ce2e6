import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { componentLogger, createLogger } from "../../src/log/logger.ts";

function capture() {
  const lines: Record<string, unknown>[] = [];
  const raw: string[] = [];
  const destination = new Writable({
    write(chunk, _encoding, callback) {
      raw.push(String(chunk));
      lines.push(JSON.parse(String(chunk)));
      callback();
    },
  });
  return { logger: createLogger({ level: "debug", destination }), lines, raw };
}

describe("logger", () => {
  it("writes JSON lines with level label, time and component", () => {
    const { logger, lines } = capture();
    componentLogger(logger, "controller").info({ key: "shop/web" }, "reconciled");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: "info", component: "controller", key: "shop/web", msg: "reconciled", name: "nix-image-operator" });
    expect(String(lines[0]!.time)).toMatch(/^\d{4}-\d\d-\d\dT/);
  });

  it.each([
    ["password", { password: "hunter2" }],
    ["nested token", { registry: { token: "hunter2" } }],
    ["auth of a dockerconfigjson entry", { auths: { "registry.example.com": { auth: "aHVudGVyMg==hunter2" } } }],
    ["authorization header", { request: { headers: { authorization: "Bearer hunter2" } } }],
    ["identity token", { credentials: { identitytoken: "hunter2" } }],
    ["secret", { secret: "hunter2" }],
  ])("censors %s", (_name, fields) => {
    const { logger, raw, lines } = capture();
    logger.info(fields, "talking to the registry");
    expect(raw.join("")).not.toContain("hunter2");
    expect(JSON.stringify(lines[0])).toContain("[redacted]");
  });

  it("keeps ordinary fields", () => {
    const { logger, lines } = capture();
    logger.info({ image: "registry.example.com/a@sha256:abc", bytes: 42 }, "pushed");
    expect(lines[0]).toMatchObject({ image: "registry.example.com/a@sha256:abc", bytes: 42 });
  });
});
