/** A CEL string literal (single-quoted, backslashes and quotes escaped). */
export function celString(text: string): string {
  return `'${text.replaceAll("\\", "\\\\").replaceAll("'", "\\'")}'`;
}
