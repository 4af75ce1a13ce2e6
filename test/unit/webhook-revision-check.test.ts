// A check request (niximage.io/check-revision, set by the webhook receiver) makes the next poll of
// that NixImage resolve at once, once per request value.
import { describe, expect, it } from "vitest";
import { RevisionPolls } from "../../src/controller/revision-polls.ts";

describe("revision check requests", () => {
  it("make the next poll resolve now, once per token", async () => {
    let calls = 0;
    const polls = new RevisionPolls(async () => ({ rev: `${++calls}`.padStart(40, "0"), refName: "refs/heads/main" }));
    const hour = 3_600_000;
    const t0 = new Date("2026-12-03T18:00:00Z");
    const later = new Date(t0.getTime() + 60_000);
    await polls.poll("ns/web", "github:acme/shop", hour, t0);
    expect((await polls.poll("ns/web", "github:acme/shop", hour, later)).rev).toBe("1".padStart(40, "0"));
    expect(calls).toBe(1);

    expect(polls.requestCheck("ns/web", "2026-12-03T18:01:00Z")).toBe(true);
    expect((await polls.poll("ns/web", "github:acme/shop", hour, later)).rev).toBe("2".padStart(40, "0"));
    // The same request value again (every later reconcile sees the annotation): no extra poll.
    expect(polls.requestCheck("ns/web", "2026-12-03T18:01:00Z")).toBe(false);
    await polls.poll("ns/web", "github:acme/shop", hour, later);
    expect(calls).toBe(2);
    // Another key is not affected; forgetting a key forgets its request.
    expect(polls.requestCheck("ns/api", "x")).toBe(true);
    polls.forget("ns/web");
    expect(polls.requestCheck("ns/web", "2026-12-03T18:01:00Z")).toBe(true);
  });
});
