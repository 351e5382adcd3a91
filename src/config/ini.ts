/**
 * A reader for INI files that follows Python's `configparser.ConfigParser`
 * (strict mode, basic interpolation), so the original ContentMonster's
 * `settings.ini` files read the same:
 *
 * - `key = value` or `key: value`, split at the first `=` or `:`; keys are
 *   lowercased, values kept verbatim as strings;
 * - full-line comments start with `#` or `;` (also when indented);
 * - a line indented deeper than its key continues the value (joined with
 *   `"\n"`); blank lines and comments inside a value do not end it, and
 *   trailing blank lines are dropped;
 * - `[DEFAULT]` keys are inherited by every section; `[DEFAULT]` may appear
 *   more than once (its keys merge), other sections may not;
 * - duplicate sections and duplicate keys in a section are errors;
 * - interpolation as `BasicInterpolation`: `%%` reads as `%`, `%(name)s` as
 *   the value of `name` in the same section or `[DEFAULT]`, a lone `%` is an
 *   error. It happens when a value is read ({@linkcode IniSection.get}), as
 *   in Python, so `[DEFAULT]` values may refer to keys some sections lack.
 *
 * Beyond configparser: an inline comment, a `#` or `;` after whitespace that
 * follows some content, is stripped (`Port = 22  # ssh`). A `#` not after
 * whitespace stays (`pa#ss`), and so does a `#` that starts a value
 * (`Password = #secret`), as configparser reads it.
 *
 * Error messages never quote a line or a value: a line that does not parse
 * may be a password.
 *
 * @module
 */

import { ConfigError } from "./errors.ts";

/** One `key = value` of a section, possibly inherited from `[DEFAULT]`. */
export interface IniEntry {
  /** The key, lowercased (configparser's `optionxform`). */
  readonly key: string;
  /** The key as written. */
  readonly name: string;
  /** The value before interpolation; continuation lines joined with `"\n"`. */
  readonly raw: string;
  /** 1-based line of the key. */
  readonly line: number;
  /** Whether the entry comes from `[DEFAULT]`. */
  readonly inherited: boolean;
  /** Whether an inline comment was stripped from the value. */
  readonly strippedComment: boolean;
}

/** One section, with its own keys followed by the `[DEFAULT]` keys it does not override. */
export interface IniSection {
  /** The header as written between the brackets. */
  readonly name: string;
  /** 1-based line of the header. */
  readonly line: number;
  readonly entries: readonly IniEntry[];
  /** The entry for `key` (any case), or undefined. */
  entry(key: string): IniEntry | undefined;
  /**
   * The interpolated value of `key` (any case), or undefined when not set.
   * @throws {ConfigError} when the value's `%` interpolation is invalid.
   */
  get(key: string): string | undefined;
}

/** A parsed INI file. */
export interface IniDocument {
  /** The file name given to {@linkcode parseIni}, used in messages. */
  readonly fileName: string;
  /** The sections in file order, `[DEFAULT]` excluded. */
  readonly sections: readonly IniSection[];
  /** The `[DEFAULT]` keys in file order. */
  readonly defaults: readonly IniEntry[];
}

/** Options of {@linkcode parseIni}. */
export interface ParseIniOptions {
  /**
   * Keys (any case) whose values are secret: interpolation errors about them
   * quote nothing from their values.
   */
  readonly secretKeys?: Iterable<string>;
}

/** configparser's `MAX_INTERPOLATION_DEPTH`. */
const MAX_DEPTH = 10;

interface Draft {
  name: string;
  line: number;
  entries: Map<string, DraftEntry>;
}

interface DraftEntry {
  name: string;
  line: number;
  parts: string[];
  strippedComment: boolean;
}

/**
 * Parses INI text with configparser's rules (see the module doc).
 * @throws {ConfigError} naming `fileName`, the line, section and key of the first problem.
 */
export function parseIni(
  text: string,
  fileName: string,
  options: ParseIniOptions = {},
): IniDocument {
  const secretKeys = new Set([...options.secretKeys ?? []].map((key) => key.toLowerCase()));
  const lines = text.replace(/^\uFEFF/, "").split(/\r\n|\n|\r/);
  const sections = new Map<string, Draft>();
  let defaults: Draft | undefined;
  let current: Draft | undefined;
  let option: DraftEntry | undefined;
  let indentLevel = 0;

  for (let index = 0; index < lines.length; index++) {
    const line = lines[index];
    const lineNo = index + 1;
    const trimmed = line.trim();
    if (trimmed === "") {
      option?.parts.push("");
      continue;
    }
    if (trimmed.startsWith("#") || trimmed.startsWith(";")) continue;
    const indent = line.length - line.trimStart().length;
    if (current && option && indent > indentLevel) {
      const [value, stripped] = stripInlineComment(trimmed);
      option.parts.push(value);
      option.strippedComment ||= stripped;
      continue;
    }
    indentLevel = indent;
    option = undefined;
    const where = { file: fileName, line: lineNo, section: current?.name };

    if (trimmed.startsWith("[")) {
      const match = /^\[(.*)\]$/s.exec(stripInlineComment(trimmed)[0]);
      if (!match) {
        throw new ConfigError('a section header must be the whole line, like "[Vessel NAME]"', {
          ...where,
          section: undefined,
        });
      }
      const name = match[1];
      if (name.trim() === "") {
        throw new ConfigError("empty section name", { ...where, section: undefined });
      }
      if (name === "DEFAULT") {
        defaults ??= { name, line: lineNo, entries: new Map() };
        current = defaults;
        continue;
      }
      const first = sections.get(name);
      if (first) {
        throw new ConfigError(`duplicate section (first defined on line ${first.line})`, {
          ...where,
          section: name,
        });
      }
      current = { name, line: lineNo, entries: new Map() };
      sections.set(name, current);
      continue;
    }

    if (!current) {
      throw new ConfigError(
        'a key outside any section: put a section header such as "[MONSTER]" above it',
        where,
      );
    }
    const at = trimmed.search(/[=:]/);
    if (at < 0) {
      throw new ConfigError(
        'expected "key = value", "key: value", a "[section]" header or a comment',
        where,
      );
    }
    const name = trimmed.slice(0, at).trim();
    if (name === "") {
      throw new ConfigError(`a key name is missing before "${trimmed[at]}"`, where);
    }
    const key = name.toLowerCase();
    const first = current.entries.get(key);
    if (first) {
      throw new ConfigError(`duplicate key (first set on line ${first.line})`, {
        ...where,
        key: name,
      });
    }
    const [value, stripped] = stripInlineComment(trimmed.slice(at + 1));
    option = { name, line: lineNo, parts: [value.trim()], strippedComment: stripped };
    current.entries.set(key, option);
  }

  const defaultEntries = [...defaults?.entries ?? []].map(([key, draft]) =>
    finish(key, draft, true)
  );
  const result: IniSection[] = [];
  for (const draft of sections.values()) {
    const own = [...draft.entries].map(([key, entry]) => finish(key, entry, false));
    const inherited = defaultEntries.filter((entry) => !draft.entries.has(entry.key));
    result.push(makeSection(draft, [...own, ...inherited], fileName, secretKeys));
  }
  return { fileName, sections: result, defaults: defaultEntries };
}

function finish(key: string, draft: DraftEntry, inherited: boolean): IniEntry {
  return {
    key,
    name: draft.name,
    raw: draft.parts.join("\n").trimEnd(),
    line: draft.line,
    inherited,
    strippedComment: draft.strippedComment,
  };
}

/**
 * Cuts `text` at the first `#` or `;` that follows whitespace which follows
 * some content; returns the rest, right-trimmed, and whether it cut.
 */
function stripInlineComment(text: string): [string, boolean] {
  let content = false;
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (content && (char === "#" || char === ";") && /\s/.test(text[i - 1])) {
      return [text.slice(0, i).trimEnd(), true];
    }
    if (!/\s/.test(char)) content = true;
  }
  return [text.trimEnd(), false];
}

function makeSection(
  draft: Draft,
  entries: IniEntry[],
  fileName: string,
  secretKeys: ReadonlySet<string>,
): IniSection {
  const byKey = new Map(entries.map((entry) => [entry.key, entry]));
  return {
    name: draft.name,
    line: draft.line,
    entries,
    entry: (key) => byKey.get(key.toLowerCase()),
    get(key) {
      const entry = byKey.get(key.toLowerCase());
      return entry && interpolate(entry, byKey, (reason) => {
        const suffix = entry.inherited ? " (inherited from [DEFAULT])" : "";
        return new ConfigError(reason + suffix, {
          file: fileName,
          line: entry.line,
          section: draft.name,
          key: entry.name,
        });
      }, secretKeys);
    },
  };
}

/** configparser's `BasicInterpolation.before_get`. */
function interpolate(
  entry: IniEntry,
  byKey: ReadonlyMap<string, IniEntry>,
  fail: (reason: string) => ConfigError,
  secretKeys: ReadonlySet<string>,
): string {
  if (!entry.raw.includes("%")) return entry.raw;
  const out: string[] = [];
  // What a secret is built from is as secret: `Password = %(pw)s` quoted pw's broken reference.
  const secret = secretKeys.has(entry.key);
  const walk = (owner: IniEntry, text: string, depth: number): void => {
    if (depth > MAX_DEPTH) {
      throw fail(`"%(name)s" references nest deeper than ${MAX_DEPTH} levels (a reference loop?)`);
    }
    let rest = text;
    while (rest !== "") {
      const at = rest.indexOf("%");
      if (at < 0) {
        out.push(rest);
        return;
      }
      out.push(rest.slice(0, at));
      rest = rest.slice(at);
      const next = rest[1];
      if (next === "%") {
        out.push("%");
        rest = rest.slice(2);
      } else if (next === "(") {
        const match = /^%\(([^)]+)\)s/.exec(rest);
        if (!match) throw fail('a bad "%(name)s" reference (write "%%" for a literal "%")');
        const target = byKey.get(match[1].toLowerCase());
        if (!target) {
          throw fail(
            secret || secretKeys.has(owner.key)
              ? "refers with %(name)s to a key that is not set in this section or [DEFAULT]"
              : `refers to "%(${match[1]})s", but no key "${
                match[1]
              }" is set in this section or [DEFAULT]`,
          );
        }
        rest = rest.slice(match[0].length);
        if (target.raw.includes("%")) walk(target, target.raw, depth + 1);
        else out.push(target.raw);
      } else {
        throw fail('a "%" must be followed by "%" or "(": write "%%" for a literal "%"');
      }
    }
  };
  walk(entry, entry.raw, 1);
  return out.join("");
}
