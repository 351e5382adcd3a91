import assert from "node:assert/strict";
import { textBeforeSftp, textBeforeSftpIn } from "./text_before_sftp.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

Deno.test("textBeforeSftp names a shell's first line and leaves SFTP packets alone", () => {
  const said = textBeforeSftp(bytes("Last login: Mon Dec  7 on pts/0\r\nmore\n"));
  assert.match(said ?? "", /text before SFTP \("Last login: Mon Dec {2}7 on pts\/0"\).*\.bashrc/);
  // OpenSSH's VERSION: length 322, type 2, version 3.
  assert.equal(textBeforeSftp(new Uint8Array([0, 0, 1, 0x42, 2, 0, 0, 0, 3])), undefined);
  // Too short to tell, and binary with a large first word.
  assert.equal(textBeforeSftp(bytes("Wel")), undefined);
  assert.equal(textBeforeSftp(new Uint8Array([0xff, 0xfe, 0x01, 0x02, 0x00, 0x1b])), undefined);
  assert.match(textBeforeSftp(bytes("x".repeat(200))) ?? "", /\("x{80}…"\)/);
});

Deno.test("textBeforeSftpIn reads the text back from a parser's packet length error", () => {
  // "Welc" read as a length.
  const said = textBeforeSftpIn("Packet length 1466264675 exceeds max length of 262144");
  assert.match(said ?? "", /text before SFTP \("Welc…"\)/);
  assert.equal(textBeforeSftpIn("Packet length 300000 exceeds max length of 262144"), undefined);
  assert.equal(textBeforeSftpIn("Connection reset"), undefined);
});
