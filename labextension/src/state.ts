/** What the sidebar keeps between polls: the selection and the last answer of each listing. */

/** What the details view shows: a model version, a deployment, or nothing. */
export type Selection =
  { kind: 'version'; name: string; version: number } | { kind: 'deployment'; name: string } | null;

/** How a section of the sidebar reads and changes the panel's one selection. */
export interface ISelectionHost {
  /** The current selection. */
  selection(): Selection;
  /** Select something else (or nothing): every section and the details view follow. */
  select(selection: Selection): void;
}

/**
 * The last answer of one listing. An answer that did not change (the same object, which `requestAPI` gives
 * after a 304, or the same JSON) is not kept again, so that nothing is rendered again.
 */
export class LastAnswer<T> {
  /** The answer kept; null before the first one and when the API is missing. */
  get value(): T | null {
    return this._value;
  }

  /** Keep `value`; false when it is the answer kept already. */
  update(value: T | null): boolean {
    if (value !== null && value === this._value) {
      return false; // the server said nothing changed (304): the same answer as last time
    }
    const text = JSON.stringify(value);
    if (text === this._text) {
      return false;
    }
    this._text = text;
    this._value = value;
    return true;
  }

  private _value: T | null = null;
  private _text = '';
}
