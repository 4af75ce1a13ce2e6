// PURE: which NixImages follow the repository and branch a push went to. A repository is known
// by `host[:port]/path`, lower-cased, without `.git`, credentials or a trailing slash, whatever
// URL form names it: https://host/o/r.git, ssh://git@host/o/r, git@host:o/r.git, github:o/r.
// Ports: an https/http URL keeps a non-default port; ssh URLs drop theirs (an ssh port never
// names the same service as a web port).
import { parseFlakeRef, type FlakeRef } from "../flake/flake-ref.ts";
import type { PushEvent } from "./push-event.ts";

/** `host[:port]/path` of a repository URL, or undefined when it is not one. */
export function repositoryKey(url: string): string | undefined {
  // scp-like ssh (`git@host:owner/repo.git`) has no `://`.
  const scp = url.includes("://") ? null : /^(?:[^@/\s]+@)?([A-Za-z0-9.-]+):([^\s]+)$/.exec(url);
  let host: string;
  let path: string;
  if (scp) {
    host = scp[1]!;
    path = scp[2]!;
  } else {
    let parsed: URL;
    try {
      parsed = new URL(url.replace(/^git\+/, ""));
    } catch {
      return undefined;
    }
    const scheme = parsed.protocol.replace(/:$/, "");
    if (!["https", "http", "ssh", "git"].includes(scheme) || parsed.hostname === "") return undefined;
    const webPort = (scheme === "https" || scheme === "http") && parsed.port !== "" ? `:${parsed.port}` : "";
    host = `${parsed.hostname}${webPort}`;
    path = decodeURIComponent(parsed.pathname);
  }
  path = path
    .replace(/^\/+|\/+$/g, "")
    .replace(/\.git$/i, "")
    .replace(/\/+$/, "");
  if (path === "") return undefined;
  return `${host.toLowerCase()}/${path.toLowerCase()}`;
}

const FORGE_HOSTS = { github: "github.com", gitlab: "gitlab.com" } as const;

/** What a flake ref follows: its repository key and branch/tag (undefined: the default branch). */
export interface FollowedSource {
  repository: string;
  ref?: string;
}

/** The repository and ref a flake ref follows; undefined when a push can never move it (pinned, archives, paths). */
export function followedSource(flake: FlakeRef | string): FollowedSource | undefined {
  let ref: FlakeRef;
  try {
    ref = typeof flake === "string" ? parseFlakeRef(flake) : flake;
  } catch {
    return undefined;
  }
  let repository: string | undefined;
  switch (ref.type) {
    case "github":
    case "gitlab": {
      if (ref.rev !== undefined) return undefined;
      const host = ref.host !== undefined && ref.host !== "" ? ref.host : FORGE_HOSTS[ref.type];
      repository = `${host.toLowerCase()}/${ref.owner.replace(/%2F/gi, "/").toLowerCase()}/${ref.repo.toLowerCase()}`;
      break;
    }
    case "git":
      if (ref.rev !== undefined) return undefined;
      repository = repositoryKey(ref.url);
      break;
    default:
      return undefined;
  }
  if (repository === undefined) return undefined;
  return ref.ref !== undefined ? { repository, ref: ref.ref } : { repository };
}

/** Whether a push to `pushedRef` (full name) moves what `followed` names. */
export function refMatches(followed: string | undefined, pushedRef: string, defaultBranch: string | undefined): boolean {
  if (followed === undefined || followed === "HEAD") {
    // The default branch: when the forge does not say which it is, a check costs one request.
    return defaultBranch === undefined ? pushedRef.startsWith("refs/heads/") : pushedRef === `refs/heads/${defaultBranch}`;
  }
  if (followed.startsWith("refs/")) return pushedRef === followed;
  return pushedRef === `refs/heads/${followed}` || pushedRef === `refs/tags/${followed}`;
}

export interface FollowingImage {
  /** `namespace/name`. */
  key: string;
  flake: string;
}

/** The keys of the images that follow the pushed repository and ref. */
export function imagesForPush(push: PushEvent, images: readonly FollowingImage[]): string[] {
  if (push.deleted) return [];
  const pushed = new Set(push.urls.map(repositoryKey).filter((k): k is string => k !== undefined));
  if (pushed.size === 0) return [];
  return images
    .filter((image) => {
      const source = followedSource(image.flake);
      return source !== undefined && pushed.has(source.repository) && refMatches(source.ref, push.ref, push.defaultBranch);
    })
    .map((image) => image.key);
}
