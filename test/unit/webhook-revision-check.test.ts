// A check request (niximage.io/check-revision, set by the webhook receiver) makes the background
// poller poll that NixImage at once, once per request value.
import { describe, expect, it } from "vitest";
import { RevisionPolls } from "../../src/controller/revision-polls.ts";
import { FakeClock, flushAsync } from "../support/fake-clock.ts";

describe("revision check requests", () => {
  it("make the key's poll due now, once per token", async () => {
    let calls = 0;
    const clock = new FakeClock(new Date("2026-12-03T18:00:00Z"));
    const polls = new RevisionPolls({ clock, random: () => 0, resolve: async () => ({ rev: `${++calls}`.padStart(40, "0"), refName: "refs/heads/main" }) });
    const changed: string[] = [];
    const abort = new AbortController();
    const running = polls.run(abort.signal, (key) => changed.push(key));
    const hour = 3_600_000;
    polls.observe("ns/web", "github:acme/shop", hour);
    await flushAsync();
    await clock.advance(60_000);
    expect(polls.observe("ns/web", "github:acme/shop", hour)?.rev).toBe("1".padStart(40, "0"));
    expect(calls).toBe(1);

    expect(polls.requestCheck("ns/web", "2026-12-03T18:01:00Z")).toBe(true);
    await flushAsync();
    expect(polls.observe("ns/web", "github:acme/shop", hour)?.rev).toBe("2".padStart(40, "0"));
    expect(changed).toEqual(["ns/web", "ns/web"]);
    // The same request value again (every later reconcile sees the annotation): no extra poll.
    expect(polls.requestCheck("ns/web", "2026-12-03T18:01:00Z")).toBe(false);
    await clock.advance(60_000);
    expect(calls).toBe(2);
    // A key not known yet is polled at once when it appears; forgetting a key forgets its request.
    expect(polls.requestCheck("ns/api", "x")).toBe(true);
    polls.observe("ns/api", "github:acme/api", hour);
    await flushAsync();
    expect(calls).toBe(3);
    polls.forget("ns/web");
    expect(polls.requestCheck("ns/web", "2026-12-03T18:01:00Z")).toBe(true);
    abort.abort();
    await running;
  });
});
