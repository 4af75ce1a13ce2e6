declare module "@dsherret/to-absolute-glob" {
  interface Options {
    cwd?: string;
    root?: string;
  }
  /** Makes a glob absolute against cwd, keeping a leading `!` (negation) and trailing slashes. */
  function toAbsoluteGlob(pattern: string, options?: Options): string;
  export default toAbsoluteGlob;
}
