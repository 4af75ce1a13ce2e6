import { describe, expect, it } from "vitest";
import { drvName, NixLogParser, stripAnsi } from "../../src/nix/nix-log.ts";

// Lines as Nix 2.8.0 printed them for `nix build --log-format internal-json` (ids shortened).
const successfulBuild = [
  `@nix {"action":"msg","level":4,"msg":"using revision ebdeb20326cbf7dd13d762aa33770c95cb0ee389 of repo '/tmp/f1'"}`,
  `@nix {"action":"start","id":12,"level":0,"text":"","type":102}`,
  `@nix {"action":"start","id":13,"level":0,"text":"","type":104}`,
  `@nix {"action":"start","id":14,"level":0,"text":"","type":103}`,
  `@nix {"action":"result","fields":[0,1,0,0],"id":13,"type":105}`,
  `@nix {"action":"result","fields":[0,0,0,0],"id":14,"type":105}`,
  `@nix {"action":"result","fields":[101,0],"id":12,"type":106}`,
  `@nix {"action":"result","fields":[100,0],"id":12,"type":106}`,
  `@nix {"action":"start","id":15,"level":6,"text":"querying info about missing paths","type":0}`,
  `@nix {"action":"stop","id":15}`,
  `@nix {"action":"start","fields":["/nix/store/lnwn63q67pak3lkq5hlcrkdfhq5z87wm-exp-hello.drv","",1,1],"id":16,"level":3,"text":"building '/nix/store/lnwn63q67pak3lkq5hlcrkdfhq5z87wm-exp-hello.drv'","type":105}`,
  `@nix {"action":"result","fields":[0,1,1,0],"id":13,"type":105}`,
  `@nix {"action":"result","fields":["building"],"id":16,"type":101}`,
  `@nix {"action":"result","fields":["warn line"],"id":16,"type":101}`,
  `@nix {"action":"result","fields":[1,1,0,0],"id":13,"type":105}`,
  `@nix {"action":"stop","id":16}`,
  `@nix {"action":"stop","id":14}`,
  `@nix {"action":"stop","id":13}`,
  `@nix {"action":"stop","id":12}`,
];

const failedBuild = [
  `@nix {"action":"start","id":2,"level":0,"text":"","type":102}`,
  `@nix {"action":"start","id":3,"level":0,"text":"","type":104}`,
  `@nix {"action":"start","fields":["/nix/store/cx9y2q63jzccasnx89mgyszv0pj3ps30-exp-broken.drv","",1,1],"id":6,"level":3,"text":"building '/nix/store/cx9y2q63jzccasnx89mgyszv0pj3ps30-exp-broken.drv'","type":105}`,
  `@nix {"action":"result","fields":[0,1,1,0],"id":3,"type":105}`,
  `@nix {"action":"result","fields":["error: the widget is misconfigured"],"id":6,"type":101}`,
  `@nix {"action":"result","fields":[0,0,0,1],"id":3,"type":105}`,
  `@nix {"action":"stop","id":6}`,
  `@nix {"action":"stop","id":3}`,
  `@nix {"action":"stop","id":2}`,
  `@nix {"action":"msg","column":null,"file":null,"level":0,"line":null,"msg":"\\u001b[31;1merror:\\u001b[0m \\u001b[35;1m\\u001b[0mbuilder for '\\u001b[35;1m/nix/store/cx9y2q63jzccasnx89mgyszv0pj3ps30-exp-broken.drv\\u001b[0m' failed with exit code 3\\u001b[0m","raw_msg":"x"}`,
];

describe("NixLogParser", () => {
  it("follows a successful build: phases, counters, log lines", () => {
    const p = new NixLogParser();
    const phases: string[] = [];
    const logs: Array<[string | undefined, string]> = [];
    for (const line of successfulBuild) {
      const ev = p.feed(line);
      if (ev.kind === "build-log") logs.push([ev.drvPath, ev.line]);
      const ph = p.progress().phase;
      if (phases[phases.length - 1] !== ph) phases.push(ph);
    }
    expect(phases).toEqual(["evaluating", "realising", "building", "realising"]);
    const final = p.progress();
    expect(final.builds).toEqual({ done: 1, expected: 1, running: 0, failed: 0 });
    expect(final.runningBuilds).toEqual([]);
    expect(logs).toEqual([
      ["/nix/store/lnwn63q67pak3lkq5hlcrkdfhq5z87wm-exp-hello.drv", "building"],
      ["/nix/store/lnwn63q67pak3lkq5hlcrkdfhq5z87wm-exp-hello.drv", "warn line"],
    ]);
    expect(p.errors()).toEqual([]);
    expect(p.realised()).toBe(true);
  });

  it("names running builds while they run", () => {
    const p = new NixLogParser();
    for (const line of successfulBuild.slice(0, 12)) p.feed(line);
    expect(p.progress().runningBuilds).toEqual(["exp-hello"]);
    expect(p.progress().phase).toBe("building");
  });

  it("keeps the failing builder's last lines and the colour-free error", () => {
    const p = new NixLogParser();
    for (const line of failedBuild) p.feed(line);
    expect(p.errors()).toEqual(["builder for '/nix/store/cx9y2q63jzccasnx89mgyszv0pj3ps30-exp-broken.drv' failed with exit code 3"]);
    expect(p.buildLog("/nix/store/cx9y2q63jzccasnx89mgyszv0pj3ps30-exp-broken.drv")).toEqual(["error: the widget is misconfigured"]);
    expect(p.progress().builds.failed).toBe(1);
  });

  it("bounds kept log lines per build", () => {
    const p = new NixLogParser({ logLinesPerBuild: 3 });
    p.feed(`@nix {"action":"start","fields":["/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x.drv","",1,1],"id":1,"type":105,"text":"building"}`);
    for (let i = 0; i < 10; i++) p.feed(`@nix {"action":"result","fields":["line ${i}"],"id":1,"type":101}`);
    expect(p.buildLog("/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x.drv")).toEqual(["line 7", "line 8", "line 9"]);
  });

  it("sums downloaded bytes over file transfers, finished or not", () => {
    const p = new NixLogParser();
    p.feed(`@nix {"action":"start","id":1,"type":102,"text":""}`);
    p.feed(`@nix {"action":"result","fields":[101,5000],"id":1,"type":106}`);
    p.feed(`@nix {"action":"start","id":2,"type":101,"text":"downloading 'https://cache/nar/a.nar.xz'"}`);
    p.feed(`@nix {"action":"result","fields":[1000,3000,0,0],"id":2,"type":105}`);
    expect(p.progress().phase).toBe("fetching");
    p.feed(`@nix {"action":"result","fields":[3000,3000,0,0],"id":2,"type":105}`);
    p.feed(`@nix {"action":"stop","id":2}`);
    p.feed(`@nix {"action":"start","id":3,"type":101,"text":"downloading b"}`);
    p.feed(`@nix {"action":"result","fields":[500,2000,0,0],"id":3,"type":105}`);
    const pr = p.progress();
    expect(pr.downloadedBytes).toBe(3500);
    expect(pr.expectedDownloadBytes).toBe(5000);
  });

  it("counts substitutions and reports the substituting phase", () => {
    const p = new NixLogParser();
    p.feed(`@nix {"action":"start","id":1,"type":102,"text":""}`);
    p.feed(`@nix {"action":"start","id":2,"type":103,"text":""}`);
    p.feed(`@nix {"action":"result","fields":[0,4,1,0],"id":2,"type":105}`);
    p.feed(`@nix {"action":"start","id":3,"type":108,"text":"copying path '/nix/store/x' from 'https://cache'"}`);
    expect(p.progress().phase).toBe("substituting");
    expect(p.progress().substitutions).toEqual({ done: 0, expected: 4, running: 1, failed: 0 });
  });

  it("treats fetching activities during evaluation as the fetching phase", () => {
    const p = new NixLogParser();
    p.feed(`@nix {"action":"start","id":1,"level":3,"type":0,"text":"fetching Git repository 'http://127.0.0.1:1/x.git'"}`);
    expect(p.progress().phase).toBe("fetching");
    expect(p.progress().lastLine).toBe("fetching Git repository 'http://127.0.0.1:1/x.git'");
    p.feed(`@nix {"action":"stop","id":1}`);
    expect(p.progress().phase).toBe("evaluating");
  });

  it("records the build phase stdenv announces", () => {
    const p = new NixLogParser();
    p.feed(`@nix {"action":"start","fields":["/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-y.drv","",1,1],"id":1,"type":105,"text":""}`);
    p.feed(`@nix {"action":"result","fields":["buildPhase"],"id":1,"type":104}`);
    expect(p.progress().buildPhase).toBe("buildPhase");
  });

  it("keeps plain and malformed lines as text and never throws", () => {
    const p = new NixLogParser({ textLinesKept: 2 });
    for (const l of ["fatal: repository 'x' not found", "@nix {not json", "@nix 42", "", "\u001b[1mbold\u001b[0m", '@nix {"action":"weird"}']) p.feed(l);
    expect(p.textTail()).toEqual(["@nix {not json", "bold"]);
  });

  it("collects warnings separately", () => {
    const p = new NixLogParser();
    p.feed(`@nix {"action":"msg","level":1,"msg":"\\u001b[35;1mwarning:\\u001b[0m Git tree '/x' is dirty"}`);
    expect(p.warningsSeen()).toEqual(["Git tree '/x' is dirty"]);
    expect(p.errors()).toEqual([]);
  });
});

describe("helpers", () => {
  it("strips ANSI escapes", () => {
    expect(stripAnsi("\u001b[31;1merror:\u001b[0m x \u001b]8;;http://a\u0007link\u001b]8;;\u0007")).toBe("error: x link");
  });
  it("derives derivation names", () => {
    expect(drvName("/nix/store/lnwn63q67pak3lkq5hlcrkdfhq5z87wm-exp-hello.drv")).toBe("exp-hello");
    expect(drvName("weird")).toBe("weird");
  });
});
