import { describe, expect, it } from "vitest";
import { parseNetrc, secretWords, sourceAuthorization } from "../../src/controller/source-authorization.ts";

const basic = (user: string, password: string) => "Basic " + Buffer.from(`${user}:${password}`).toString("base64");
const url = (s: string) => new URL(s);

describe("sourceAuthorization", () => {
  it.each([
    {
      what: "netrc machine of the host (port ignored, as curl does)",
      data: { netrc: "machine other.example login a password b\nmachine git.example.com login ci password s3cret\n" },
      url: "https://git.example.com:8443/acme/app.git",
      tokens: false,
      want: { header: basic("ci", "s3cret"), from: "netrc machine git.example.com" },
    },
    {
      what: "never the netrc default entry: a credential goes only to a host its Secret names",
      data: { netrc: "machine other.example login a password b\ndefault login d password dd\n" },
      url: "https://git.example.com/x.git",
      tokens: false,
      want: undefined,
    },
    {
      what: "netrc on one line, macdef body skipped",
      data: { netrc: "macdef init\nmachine evil login x password y\n\nmachine git.example.com login u password p" },
      url: "https://git.example.com/x.git",
      tokens: false,
      want: { header: basic("u", "p"), from: "netrc machine git.example.com" },
    },
    {
      what: "a GitHub token: Basic with the token as password",
      data: { accessTokens: "github.com=ghp_abc gitlab.com=PAT:glpat-x" },
      url: "https://github.com/acme/app.git",
      tokens: true,
      want: { header: basic("x-access-token", "ghp_abc"), from: "access-tokens entry github.com" },
    },
    {
      what: "GitLab PAT: and OAuth2: forms: user oauth2",
      data: { accessTokens: "gitlab.com=PAT:glpat-x gitlab.example.com=OAuth2:oa" },
      url: "https://gitlab.example.com/g/app.git",
      tokens: true,
      want: { header: basic("oauth2", "oa"), from: "access-tokens entry gitlab.example.com" },
    },
    {
      what: "a host/path key wins over the host for repositories under it; not for others",
      data: { accessTokens: "gitlab.com=PAT:all gitlab.com/team=PAT:team" },
      url: "https://gitlab.com/team/app.git",
      tokens: true,
      want: { header: basic("oauth2", "team"), from: "access-tokens entry gitlab.com/team" },
    },
    {
      what: "host/path prefix does not match a sibling with the same prefix",
      data: { accessTokens: "gitlab.com=PAT:all gitlab.com/team=PAT:team" },
      url: "https://gitlab.com/teamx/app.git",
      tokens: true,
      want: { header: basic("oauth2", "all"), from: "access-tokens entry gitlab.com" },
    },
    {
      what: "git+https prefers netrc; forge refs prefer tokens",
      data: { netrc: "machine github.com login n password np", accessTokens: "github.com=tok" },
      url: "https://github.com/acme/app.git",
      tokens: false,
      want: { header: basic("n", "np"), from: "netrc machine github.com" },
    },
    {
      what: "forge refs prefer tokens",
      data: { netrc: "machine github.com login n password np", accessTokens: "github.com=tok" },
      url: "https://github.com/acme/app.git",
      tokens: true,
      want: { header: basic("x-access-token", "tok"), from: "access-tokens entry github.com" },
    },
    {
      what: "nothing for this host: anonymous",
      data: { netrc: "machine a.example login a password b", accessTokens: "github.com=tok" },
      url: "https://git.example.com/x.git",
      tokens: false,
      want: undefined,
    },
  ])("$what", ({ data, url: u, tokens, want }) => {
    expect(sourceAuthorization(data, url(u), tokens)).toEqual(want);
  });

  it("parses netrc entries and lists the secret words to scrub", () => {
    expect(parseNetrc("machine h login l password p account acc")).toEqual([{ machine: "h", login: "l", password: "p" }]);
    expect(secretWords({ netrc: "machine h login l password hunter22", accessTokens: "gitlab.com=PAT:glpat-123 github.com=ghp_456" })).toEqual([
      "hunter22",
      "PAT:glpat-123",
      "glpat-123",
      "ghp_456",
      "ghp_456",
    ]);
  });
});
