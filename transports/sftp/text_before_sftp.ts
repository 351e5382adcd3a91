/**
 * A vessel whose login shell prints text when it starts (an `echo` in
 * `.bashrc`, a message of the day from a profile script) sends that text
 * down the SFTP session before the SFTP server's first packet. SFTP reads
 * the first four bytes as a packet's length ("Welc" is 1466264675) and
 * gives up with words that do not name the cause; this names it.
 *
 * @module
 */

/** The session's first bytes were not SFTP but text; the message says what to fix. */
export class TextBeforeSftpError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TextBeforeSftpError";
  }
}

/**
 * The longest first packet an SFTP server sends: its VERSION with its
 * extensions (OpenSSH's is 322 bytes). A length past this is not SFTP.
 */
const LARGEST_VERSION_PACKET = 256 << 10;
/** Characters of the text shown, enough to recognise it. */
const SHOWN = 80;

/**
 * Why the SFTP session could not start when `head`, the first bytes the
 * vessel sent on it, is text rather than an SFTP packet; `undefined` when
 * it is not. `whole`: `head` holds all the vessel sent before it stopped
 * (else a line without its end is shown cut).
 */
export function textBeforeSftp(head: Uint8Array, whole = true): string | undefined {
  if (head.byteLength < 4) return undefined;
  const length = new DataView(head.buffer, head.byteOffset, 4).getUint32(0);
  if (length <= LARGEST_VERSION_PACKET) return undefined;
  const [line, ...rest] = new TextDecoder().decode(head).split(/\r?\n/);
  if (!/^[\x20-\x7e\t]+$/.test(line)) return undefined;
  const cut = line.length > SHOWN || (!whole && rest.length === 0);
  const shown = `${line.slice(0, SHOWN)}${cut ? "…" : ""}`;
  return `the vessel sent text before SFTP ("${shown}"): something it runs at login prints ` +
    "it (a startup file of the login shell such as .bashrc, .profile or /etc/profile.d, or " +
    "a ForceCommand); make that print only in interactive shells";
}

/**
 * The same from a parser's "Packet length N exceeds max length" error, which
 * keeps only the first four bytes (as N).
 */
export function textBeforeSftpIn(message: string): string | undefined {
  const length = /Packet length (\d+) exceeds/.exec(message)?.[1];
  if (length === undefined || Number(length) > 0xffffffff) return undefined;
  const head = new Uint8Array(4);
  new DataView(head.buffer).setUint32(0, Number(length));
  return textBeforeSftp(head, false);
}
