import { describe, expect, it } from "vitest";
import { quantityValue, stepResources } from "../../src/controller/step-resources.ts";

const defaults = { requests: { cpu: "100m", memory: "256Mi" }, limits: { cpu: "2", memory: "2Gi" } };

describe("quantityValue", () => {
  it.each([
    ["500m", 0.5],
    ["2", 2],
    ["1.5", 1.5],
    ["4Gi", 4 * 2 ** 30],
    ["512Mi", 512 * 2 ** 20],
    ["1G", 1e9],
    ["100k", 1e5],
  ])("%s = %d", (q, v) => expect(quantityValue(q)).toBe(v));

  it("refuses what is not a quantity", () => {
    expect(() => quantityValue("4GB")).toThrow(/not a quantity: "4GB"/);
  });
});

describe("stepResources", () => {
  it("no spec: the defaults", () => {
    expect(stepResources(defaults, undefined)).toEqual(defaults);
  });

  it("the spec's keys win, the other defaults stay", () => {
    expect(stepResources(defaults, { requests: { cpu: "1" }, limits: { memory: "3Gi" } })).toEqual({
      requests: { cpu: "1", memory: "256Mi" },
      limits: { cpu: "2", memory: "3Gi" },
    });
  });

  it("a default limit below the spec's request is raised to it", () => {
    expect(stepResources(defaults, { requests: { cpu: "4", memory: "8Gi" } })).toEqual({
      requests: { cpu: "4", memory: "8Gi" },
      limits: { cpu: "4", memory: "8Gi" },
    });
  });

  it("a default request above the spec's limit is lowered to it", () => {
    expect(stepResources(defaults, { limits: { cpu: "50m", memory: "128Mi" } })).toEqual({
      requests: { cpu: "50m", memory: "128Mi" },
      limits: { cpu: "50m", memory: "128Mi" },
    });
  });

  it("what the spec sets itself is kept as it is (the API server judges it)", () => {
    expect(stepResources(defaults, { requests: { memory: "4Gi" }, limits: { memory: "1Gi" } })).toEqual({
      requests: { cpu: "100m", memory: "4Gi" },
      limits: { cpu: "2", memory: "1Gi" },
    });
  });

  it("empty defaults and no spec: no resources at all", () => {
    expect(stepResources({}, undefined)).toEqual({});
  });
});
