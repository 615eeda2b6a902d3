import { ILabShell } from '@jupyterlab/application';
import { ISessionContext } from '@jupyterlab/apputils';
import { PathExt } from '@jupyterlab/coreutils';
import { Widget } from '@lumino/widgets';

import { el, replace } from './dom';
import { IRegistries, IRegistryInUse } from './types';

/** Why the sidebar shows the registry it shows. */
export type RegistrySource = 'kernel' | 'default' | 'chosen';

/** The registry the sidebar shows, and why. */
export interface IShownRegistry {
  home: string;
  label: string;
  source: RegistrySource;
  /** Why this one, in words ("used by the kernel of 07-registry.ipynb"). */
  why: string;
}

/** The notebook (or console) whose kernel the sidebar follows: of the main area's current widget. */
export interface IActiveKernel {
  /** The kernel's id; null when there is no kernel (yet). */
  id: string | null;
  /** The document's file name; null when no widget with a kernel was opened. */
  name: string | null;
}

/**
 * Follows the kernel of the main area's current widget (JupyterLab's shell: current widget -> session
 * context -> kernel id). A widget without a kernel (a launcher, a text file) keeps the last one followed,
 * until that one is closed. Calls `changed` when the widget, its session or its kernel changes.
 */
export class KernelFollower {
  constructor(shell: ILabShell | null, changed: () => void) {
    this._changed = changed;
    if (shell !== null) {
      shell.currentChanged.connect((_, args) => this._follow(args.newValue), this);
      this._follow(shell.currentWidget);
    }
  }

  /** The kernel followed now. */
  get active(): IActiveKernel {
    const context = this._context;
    if (context === null) {
      return { id: null, name: null };
    }
    return { id: context.session?.kernel?.id ?? null, name: PathExt.basename(context.path) || context.name };
  }

  private _follow(widget: Widget | null): void {
    const context = sessionContextOf(widget);
    if (context === null || context === this._context) {
      return;
    }
    this._release();
    this._context = context;
    context.kernelChanged.connect(this._onChange, this);
    context.sessionChanged.connect(this._onChange, this);
    context.disposed.connect(this._onDisposed, this);
    this._changed();
  }

  private _release(): void {
    const context = this._context;
    if (context !== null && !context.isDisposed) {
      context.kernelChanged.disconnect(this._onChange, this);
      context.sessionChanged.disconnect(this._onChange, this);
      context.disposed.disconnect(this._onDisposed, this);
    }
    this._context = null;
  }

  private _onChange(): void {
    this._changed();
  }

  private _onDisposed(): void {
    this._context = null;
    this._changed();
  }

  private readonly _changed: () => void;
  private _context: ISessionContext | null = null;
}

/** The session context of a notebook or console panel (anything with a `sessionContext`), else null. */
function sessionContextOf(widget: Widget | null): ISessionContext | null {
  const candidate = (widget as { sessionContext?: unknown } | null)?.sessionContext;
  if (typeof candidate === 'object' && candidate !== null && 'kernelChanged' in candidate) {
    return candidate as ISessionContext;
  }
  return null;
}

/**
 * The registry to show: the one chosen in the selector; else the one the followed kernel uses; else the
 * server's default, saying why it is the default.
 */
export function chooseRegistry(
  registries: IRegistries,
  kernel: IActiveKernel,
  chosen: string | null
): IShownRegistry {
  const label = (home: string) =>
    registries.registries.find(r => r.home === home)?.label ??
    (home === registries.default.home ? registries.default.label : home);
  if (chosen !== null) {
    const followed = kernel.id !== null ? registries.kernels[kernel.id] : undefined;
    const also =
      followed !== undefined && followed !== chosen
        ? `; ${kernel.name}'s kernel uses ${label(followed)}`
        : '';
    return { home: chosen, label: label(chosen), source: 'chosen', why: `chosen here${also}` };
  }
  const home = kernel.id !== null ? registries.kernels[kernel.id] : undefined;
  if (home !== undefined) {
    return { home, label: label(home), source: 'kernel', why: `used by the kernel of ${kernel.name}` };
  }
  const why =
    kernel.name === null
      ? "the server's default (no notebook open)"
      : kernel.id === null
        ? `the server's default (${kernel.name} has no kernel running)`
        : `the server's default (${kernel.name}'s kernel has not used a registry yet)`;
  return { home: registries.default.home, label: registries.default.label, source: 'default', why };
}

/** The value of the selector's first option: follow the notebook's kernel. */
const FOLLOW = '';

/**
 * The sidebar's registry line: which registry it reads (short path; the full one as the tooltip) and why,
 * and a selector of the registries in use (with "follow the notebook's kernel" first).
 */
export class RegistryBar {
  /** The line, to be placed in the panel. */
  readonly node: HTMLElement;

  /** @param choose called with the registry chosen in the selector (null: follow the notebook's kernel). */
  constructor(choose: (home: string | null) => void) {
    this._path = el('code', { className: 'jp-mlops-registry-path' });
    this._why = el('div', { className: 'jp-mlops-registry-why' });
    this._select = el('select', {
      className: 'jp-mlops-registry-select',
      title: 'The registry to show: the one the notebook’s kernel uses, or another one in use'
    });
    this._select.setAttribute('aria-label', 'Registry');
    this._select.addEventListener('change', () =>
      choose(this._select.value === FOLLOW ? null : this._select.value)
    );
    this.node = el(
      'div',
      { className: 'jp-mlops-registry' },
      el(
        'div',
        { className: 'jp-mlops-registry-line' },
        el('span', { className: 'jp-mlops-registry-label' }, 'Registry'),
        this._path
      ),
      this._why,
      this._select
    );
    this.node.hidden = true;
  }

  /** Show the registry read and the registries offered. */
  render(registries: IRegistries, shown: IShownRegistry, kernel: IActiveKernel): void {
    this.node.hidden = false;
    this.node.dataset.registry = shown.home;
    this.node.dataset.source = shown.source;
    this._path.textContent = shown.label;
    this._path.title = shown.home;
    this._why.textContent = shown.why;
    const offered: IRegistryInUse[] = [...registries.registries];
    if (!offered.some(r => r.home === shown.home)) {
      offered.push({
        home: shown.home,
        label: shown.label,
        default: false,
        kernels: [],
        processes: 0,
        used_at: null
      });
    }
    const follow = kernel.name === null ? 'Follow the notebook’s kernel' : `Follow ${kernel.name}’s kernel`;
    replace(
      this._select,
      el('option', {}, follow),
      ...offered.map(r => {
        const option = el('option', { title: r.home }, optionLabel(r));
        option.value = r.home;
        return option;
      })
    );
    (this._select.firstChild as HTMLOptionElement).value = FOLLOW;
    this._select.value = shown.source === 'chosen' ? shown.home : FOLLOW;
  }

  private readonly _path: HTMLElement;
  private readonly _why: HTMLDivElement;
  private readonly _select: HTMLSelectElement;
}

function optionLabel(r: IRegistryInUse): string {
  const kernels = r.kernels.length;
  const notes = [
    r.default ? 'server default' : '',
    kernels > 0 ? `${kernels} kernel${kernels === 1 ? '' : 's'}` : ''
  ].filter(n => n.length > 0);
  return notes.length > 0 ? `${r.label} (${notes.join(', ')})` : r.label;
}
