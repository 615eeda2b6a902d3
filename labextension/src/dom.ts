/** A small DOM builder: text always goes in as text, never as HTML. */

export type Child = Node | string | number | null | undefined | false;

export interface IProps {
  className?: string;
  title?: string;
  href?: string;
  target?: string;
  type?: string;
  disabled?: boolean;
  role?: string;
  data?: Record<string, string>;
  aria?: Record<string, string>;
  onClick?: (event: MouseEvent) => void;
}

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: IProps = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (props.className) {
    node.className = props.className;
  }
  if (props.title) {
    node.title = props.title;
  }
  if (props.href !== undefined) {
    node.setAttribute('href', props.href);
  }
  if (props.target) {
    node.setAttribute('target', props.target);
    node.setAttribute('rel', 'noopener noreferrer');
  }
  if (props.type) {
    node.setAttribute('type', props.type);
  }
  if (props.disabled) {
    node.setAttribute('disabled', '');
  }
  if (props.role) {
    node.setAttribute('role', props.role);
  }
  for (const [key, value] of Object.entries(props.data ?? {})) {
    node.dataset[key] = value;
  }
  for (const [key, value] of Object.entries(props.aria ?? {})) {
    node.setAttribute(`aria-${key}`, value);
  }
  if (props.onClick) {
    node.addEventListener('click', props.onClick as EventListener);
  }
  append(node, ...children);
  return node;
}

export function append(node: Node, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    node.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
  }
}

/** Replace a node's children. */
export function replace(node: Node, ...children: Child[]): void {
  while (node.firstChild) {
    node.removeChild(node.firstChild);
  }
  append(node, ...children);
}

/** A two-column table of fields; rows whose value is empty are left out. */
export function fields(rows: Array<[string, Child]>): HTMLTableElement {
  const table = el('table', { className: 'jp-mlops-fields' });
  for (const [label, value] of rows) {
    if (value === null || value === undefined || value === '' || value === false) {
      continue;
    }
    table.appendChild(el('tr', {}, el('th', {}, label), el('td', {}, value)));
  }
  return table;
}

/** "2026-11-22T10:04:05.123+00:00" -> "2026-11-22 10:04:05" in the browser's time zone. */
export function when(iso: string): string {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) {
    return iso;
  }
  const pad = (n: number) => String(n).padStart(2, '0');
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`
  );
}

export function bytes(size: number): string {
  const units = ['B', 'KB', 'MB', 'GB'];
  let value = size;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** A small label (an alias, a tag). */
export function chip(label: string, title?: string): HTMLSpanElement {
  return el('span', { className: 'jp-mlops-chip', title: title ?? label }, label);
}

/** A deployment's state, coloured by the stylesheet (`jp-mlops-state-running`, ...). */
export function stateBadge(state: string): HTMLSpanElement {
  return el('span', { className: `jp-mlops-state jp-mlops-state-${state.replace(/[^a-z]/g, '')}` }, state);
}

/** Make a clickable row reachable with Tab and activated with Enter or Space. */
export function focusable(node: HTMLElement): void {
  node.tabIndex = 0;
  node.addEventListener('keydown', event => {
    if (event.key === 'Enter' || event.key === ' ') {
      event.preventDefault();
      node.click();
    }
  });
}
