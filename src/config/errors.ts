/**
 * The error thrown for every problem in `settings.ini`; `main` turns it into
 * exit status 2.
 *
 * @module
 */

/** Where in a config file something is: the file, and when known the line, section and key. */
export interface ConfigLocation {
  /** The config file, as the user named it. */
  readonly file: string;
  /** 1-based line number. */
  readonly line?: number;
  /** The section header without brackets, e.g. `Directory outbox`. */
  readonly section?: string;
  /** The key, e.g. `Location`. */
  readonly key?: string;
}

/**
 * Formats a location as the prefix of a message:
 * `settings.ini:7: [Directory outbox] Location: `.
 */
export function formatConfigLocation(where: ConfigLocation): string {
  let text = where.line === undefined ? `${where.file}: ` : `${where.file}:${where.line}: `;
  if (where.section !== undefined) text += `[${where.section}] `;
  if (where.key !== undefined) text += `${where.key}: `;
  return text;
}

/**
 * A problem in the config file. The message names the file, line, section
 * and key: `settings.ini:7: [Directory outbox] Location: "/nope" does not exist`.
 * It never contains a password or passphrase.
 */
export class ConfigError extends Error {
  /** The config file, as the user named it. */
  readonly file: string;
  /** 1-based line number, when the problem has one. */
  readonly line?: number;
  /** The section header without brackets, when the problem is inside one. */
  readonly section?: string;
  /** The key, when the problem is about one. */
  readonly key?: string;
  /** The problem itself, without the location prefix. */
  readonly reason: string;

  constructor(reason: string, where: ConfigLocation, options?: ErrorOptions) {
    super(formatConfigLocation(where) + reason, options);
    this.name = "ConfigError";
    this.file = where.file;
    this.line = where.line;
    this.section = where.section;
    this.key = where.key;
    this.reason = reason;
  }
}
