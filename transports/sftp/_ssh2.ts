/**
 * ssh2, loaded after {@link ./_chacha20_fix.ts}. Every module of the SFTP
 * transport imports ssh2 from here, never from "ssh2" directly.
 *
 * @module
 */
import "./_chacha20_fix.ts";
// @ts-types="@types/ssh2"
export { Client, utils } from "ssh2";
// @ts-types="@types/ssh2"
export type {
  AnyAuthMethod,
  CipherAlgorithm,
  ClientChannel,
  ParsedKey,
  ServerHostKeyAlgorithm,
  SFTPWrapper,
  Stats,
} from "ssh2";
export { chacha20CiphersFinalized } from "./_chacha20_fix.ts";
