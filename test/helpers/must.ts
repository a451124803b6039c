// For a value a test needs to go on: null or undefined fails the test with an assertion that
// names what was expected, instead of a TypeError further down.
import { AssertionError } from 'node:assert';

export function must<T>(value: T | null | undefined, what: string): T {
  if (value === null || value === undefined) {
    throw new AssertionError({ message: `expected ${what}, saw ${String(value)}`, actual: value, expected: what, operator: 'must' });
  }
  return value;
}
