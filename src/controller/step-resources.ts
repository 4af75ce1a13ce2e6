// Resources of every builder step (pure): the operator config's defaults, with the NixImage's
// spec.build.resources laid over them key by key. A default limit below the resulting request
// (e.g. the spec asks for 8Gi of memory, the default limit is 2Gi) is raised to the request, so
// a spec never produces a container the API server refuses; likewise a default request above a
// limit the spec sets is lowered to it. What the spec itself sets is kept as it is.
import { quantityPattern } from "../api/patterns.ts";

type ResourceName = "cpu" | "memory" | "ephemeral-storage";
type QuantityMap = Partial<Record<ResourceName, string>>;
export interface StepResources {
  requests?: QuantityMap;
  limits?: QuantityMap;
}

const suffixes: Record<string, number> = {
  "": 1,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};
const quantityRe = new RegExp(quantityPattern);

/** The value of a Kubernetes quantity in base units (cores, bytes); throws on a malformed one. */
export function quantityValue(quantity: string): number {
  if (!quantityRe.test(quantity)) throw new Error(`not a quantity: ${JSON.stringify(quantity)} (expected e.g. 500m, 2 or 4Gi)`);
  const m = /^([0-9.]+)(.*)$/.exec(quantity)!;
  return Number(m[1]) * suffixes[m[2]!]!;
}

export function stepResources(defaults: StepResources, spec: StepResources | undefined): StepResources {
  const requests: QuantityMap = { ...defaults.requests, ...spec?.requests };
  const limits: QuantityMap = { ...defaults.limits, ...spec?.limits };
  for (const name of Object.keys(requests) as ResourceName[]) {
    const request = requests[name]!;
    const limit = limits[name];
    if (limit === undefined || quantityValue(limit) >= quantityValue(request)) continue;
    if (spec?.limits?.[name] === undefined) limits[name] = request;
    else if (spec.requests?.[name] === undefined) requests[name] = limit;
  }
  return {
    ...(Object.keys(requests).length ? { requests } : {}),
    ...(Object.keys(limits).length ? { limits } : {}),
  };
}
