/** The JSON the server extension answers (mlops_magics/payloads.py). */

export interface IVersionSummary {
  version: number;
  aliases: string[];
  tags: Record<string, string>;
  flavor: string;
  created_at: string;
}

export interface IModelSummary {
  name: string;
  /** Newest first. */
  versions: IVersionSummary[];
  /** Alias -> the version it points to. */
  aliases: Record<string, number>;
}

export interface IAliasEvent {
  alias: string;
  /** null when the alias was removed. */
  version: number | null;
  at: string;
  by: string;
}

export interface IVersionDetail {
  name: string;
  version: number;
  flavor: string;
  framework: string;
  framework_version: string;
  sha256: string;
  size: number;
  files: string[];
  tags: Record<string, string>;
  aliases: string[];
  description: string | null;
  created_at: string;
  created_by: string;
  signature: Record<string, unknown> | null;
  lineage: Record<string, unknown>;
  alias_history: IAliasEvent[];
  report_summaries: Record<string, string>;
}

export interface IDeployment {
  name: string;
  model: string;
  model_name: string;
  model_version: number;
  target: string;
  /** Checked when listed: running, stopped, failed, removed... */
  state: string;
  url: string | null;
  swagger_url: string | null;
  auth: boolean;
  collect: boolean;
  created_at: string;
  updated_at: string;
}

export interface ILogTail {
  name: string;
  tail: number;
  log: string;
}

export interface IHealth {
  version: string;
  registry: string;
}

/** A registry folder as the sidebar shows it. */
export interface IRegistryName {
  /** The folder, absolute. */
  home: string;
  /** The folder, short (`~/...`, `…/a/b`). */
  label: string;
}

export interface IRegistryInUse extends IRegistryName {
  /** Whether it is the Jupyter server's default registry (its MLOPS_HOME). */
  default: boolean;
  /** The Jupyter kernels that use it now. */
  kernels: string[];
  /** How many live processes used it. */
  processes: number;
  /** When a process last switched to it (null: none did; listed as the default). */
  used_at: string | null;
}

export interface IRegistries {
  default: IRegistryName;
  /** The most recently switched to first. */
  registries: IRegistryInUse[];
  /** Kernel id -> the registry it uses now. */
  kernels: Record<string, string>;
}
