import { describe, expect, it } from "vitest";
import { imageTags, immutableTag, SORTABLE_TAG_PATTERN, sortableTag, TagError } from "../../src/builder/image-tags.ts";
import { isValidTag } from "../../src/oci/image-reference.ts";

const out = "/nix/store/wkjazii3rjn901h0xl6rdlwhiblf3pc2-hello-1.0";
const rev = "3c5716757368b589fa04d2ffb66ac586ef5cf676";

describe("immutable tags", () => {
  it("come from the commit and the out path hash", () => {
    expect(immutableTag({ rev, narHash: "sha256-x" }, out)).toBe("rev-3c5716757368-wkjazii3");
  });

  it("come from the source NAR hash when there is no commit (tarballs)", () => {
    const a = immutableTag({ narHash: "sha256-pQtc3b6Uzagku7kRa1g1FOBjF4phPHC97hHwm8nYaHQ=" }, out);
    const b = immutableTag({ narHash: "sha256-AAAc3b6Uzagku7kRa1g1FOBjF4phPHC97hHwm8nYaHQ=" }, out);
    expect(a).toMatch(/^nar-[0-9a-f]{12}-wkjazii3$/);
    expect(a).not.toBe(b);
    expect(isValidTag(a)).toBe(true);
  });

  it("differ for different outputs of one revision", () => {
    expect(immutableTag({ rev, narHash: "x" }, "/nix/store/g1q9rqaxw9hdmq5iyz1y6a6zpfyrz9sf-busybox-static")).toBe("rev-3c5716757368-g1q9rqax");
  });

  it("go first, before the requested tags (deduplicated, validated)", () => {
    expect(imageTags({ rev, narHash: "x" }, out, ["latest", "v1", "latest"])).toEqual(["rev-3c5716757368-wkjazii3", "latest", "v1"]);
    expect(() => imageTags({ rev, narHash: "x" }, out, ["-bad"])).toThrow(TagError);
    expect(() => imageTags({ rev, narHash: "x" }, out, ["a".repeat(129)])).toThrow(/invalid tag/);
    expect(() => immutableTag({ rev, narHash: "x" }, "/tmp/not-a-store-path")).toThrow(TagError);
  });
});

describe("sortable tags (rollout.policy Disabled: for image updaters)", () => {
  it("are the build time in UTC, then the commit", () => {
    expect(sortableTag("2026-12-03T18:30:05Z", { rev, narHash: "x" })).toBe("20261203183005-3c5716757368");
    expect(sortableTag("2026-12-03T19:30:05+01:00", { rev, narHash: "x" })).toBe("20261203183005-3c5716757368");
    expect(sortableTag("2026-12-03T18:30:05.999Z", { rev, narHash: "x" })).toBe("20261203183005-3c5716757368");
    const tarball = sortableTag("2026-12-03T18:30:05Z", { narHash: "sha256-pQtc3b6Uzagku7kRa1g1FOBjF4phPHC97hHwm8nYaHQ=" });
    expect(tarball).toMatch(/^20261203183005-nar[0-9a-f]{12}$/);
    for (const tag of [tarball, sortableTag("2026-12-03T18:30:05Z", { rev, narHash: "x" })]) {
      expect(isValidTag(tag)).toBe(true);
      expect(tag).toMatch(new RegExp(SORTABLE_TAG_PATTERN));
    }
    expect(() => sortableTag("yesterday", { rev, narHash: "x" })).toThrow(TagError);
    expect(() => sortableTag("1733250000", { rev, narHash: "x" })).toThrow(/RFC 3339/);
  });

  it("sort by build time both as strings and as numbers, whatever the commit (a later build of an older commit sorts last)", () => {
    const older = "0000000000000000000000000000000000000001";
    const tags = [
      sortableTag("2026-12-03T09:59:59Z", { rev, narHash: "x" }),
      sortableTag("2026-12-03T10:00:00Z", { rev: "f".repeat(40), narHash: "x" }),
      sortableTag("2026-12-04T00:00:00Z", { rev: older, narHash: "x" }),
    ];
    expect([...tags].sort()).toEqual(tags);
    expect(tags.map((t) => Number(t.split("-")[0]))).toEqual([...tags.map((t) => Number(t.split("-")[0]))].sort((a, b) => a - b));
  });

  it("come second, after the immutable tag, only when asked for", () => {
    expect(imageTags({ rev, narHash: "x" }, out, ["latest"], { sortableAt: "2026-12-03T18:30:05Z" })).toEqual([
      "rev-3c5716757368-wkjazii3",
      "20261203183005-3c5716757368",
      "latest",
    ]);
    expect(imageTags({ rev, narHash: "x" }, out, ["latest"])).toEqual(["rev-3c5716757368-wkjazii3", "latest"]);
  });
});
