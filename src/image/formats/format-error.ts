// The error of everything in src/image/formats: which format, which source (a store path or a
// command), what is wrong, and what to do. Messages never echo file contents beyond short names.

export type ImageFormat = "package" | "docker-archive" | "stream-layered" | "nix2container";

export interface ImageFormatErrorInit {
  format: ImageFormat | "auto";
  /** Store path or command the image came from. */
  source: string;
  reason: string;
  hint: string;
  cause?: unknown;
}

export class ImageFormatError extends Error {
  override name = "ImageFormatError";
  readonly format: ImageFormat | "auto";
  readonly source: string;
  readonly reason: string;
  readonly hint: string;

  constructor(init: ImageFormatErrorInit) {
    super(
      `${init.format === "auto" ? "image" : init.format} ${init.source}: ${init.reason}. What to do: ${init.hint}`,
      init.cause === undefined ? undefined : { cause: init.cause },
    );
    this.format = init.format;
    this.source = init.source;
    this.reason = init.reason;
    this.hint = init.hint;
  }
}
