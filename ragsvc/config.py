"""Settings, read once at the edge (env `RAGSVC_*`, nested with `__`, e.g. RAGSVC_API__PORT=9000).

Each part gets its own frozen section; constructors take those sections, never the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StoreSettings(_Frozen):
    data_dir: Path = Field(Path("indexes/data"), description="duckdb catalog and index files live here")
    save_interval_s: float = Field(30.0, ge=0, description="how often changed indexes are saved (also on close)")
    max_filter_clauses: int = Field(64, ge=1, le=4096, description="comparisons in one metadata filter")
    max_filter_values: int = Field(32_768, ge=1, le=1_000_000, description="values in one $in / $nin list")
    max_metadata_bytes: int = Field(40_960, ge=2, le=16 << 20,
                                    description="a document's metadata as compact JSON; it is stored again with "
                                                "each of the document's chunks, so larger gets 413")
    max_write_bytes: int = Field(64 << 20, ge=1 << 10, le=1 << 40,
                                 description="text and metadata one ingest batch stores (documents, and chunks "
                                             "with their document's metadata); larger gets 413")
    max_batch_chunks: int = Field(32_768, ge=1, le=1 << 24,
                                  description="chunks one ingest batch embeds and stores; more gets 413")
    simulations_dir: Path | None = Field(None, description="simulation runs GET /v1/simulations serves (one folder "
                                         "each); unset = <data_dir>/simulations")


class EmbedSettings(_Frozen):
    model: str = Field("minilm", description="packaged alias or a local sentence-transformers folder")
    batch_size: int = Field(32, ge=1, le=4096)
    device: str = Field("cpu", description="cpu or cuda")
    query_prefix: str = Field("", max_length=256,
                              description="prepended to queries, e.g. 'task: search result | query: '")
    document_prefix: str = Field("", max_length=256, description="prepended to documents before embedding")
    precision: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: the fastest precision that measured faster than float32 here and agreed with it "
                            "(cosine mean >= 0.99, min >= 0.98) on a fixed sample; a named one is used if it agrees")
    sort_by_length: bool = Field(True, description="batch texts sorted by token count (less padding)")
    backend: Literal["auto", "torch", "openvino"] = Field(
        "auto", description="auto: a locally converted OpenVINO model where the openvino package is installed, the "
                            "CPU path measured faster than torch here and it agreed with float32; torch otherwise")
    quantize: Literal["auto", "none", "int8"] = Field(
        "auto", description="auto: the OpenVINO model quantised to int8 (NNCF, fixed calibration sample) where nncf "
                            "is installed, it agreed with float32 and measured faster than the float model here")
    lean_forward: Literal["traced", "eager", "off"] = Field(
        "traced", description="torch batches of a BERT model (float32, or bfloat16 where chosen) run through a lean "
                              "forward pass (fused Q/K/V, no per-module wrappers) once it matched transformers' own "
                              "on a fixed sample; traced: "
                              "as one TorchScript graph, which holds no GIL between operations; off: transformers' "
                              "own")


class ApiSettings(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_body_bytes: int = Field(16 << 20, ge=1024, description="requests above this size get 413")
    max_k: int = Field(1000, ge=1)
    max_query_chars: int = Field(8192, ge=1)
    max_batch_documents: int = Field(1000, ge=1)
    max_document_chars: int = Field(2_000_000, ge=1, description="longer documents get 413; split them first")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header names accepted besides 127.0.0.1, localhost, [::1] and the bound address "
                    "(DNS-rebinding guard); '*' accepts any")
    insecure: bool = Field(False, description="serve a non-loopback address with no API keys (everyone is admin)")
    rate_limit_per_s: float = Field(1000.0, ge=0, le=1e6,
                                    description="sustained requests/s per API key (per client address while keys "
                                                "are off); 0 turns rate limiting off")
    rate_limit_burst: int = Field(2000, ge=1, le=10_000_000, description="requests a key may send at once")
    work_threads: int = Field(
        64, ge=1, le=1024,
        description="threads for requests that wait on the model (answers, chat turns): each in flight holds one, "
                    "so this bounds how many the engine can batch at once; Python's default, cores + 4, would "
                    "cap a 2-core server at 6")
    embed_threads: int = Field(
        0, ge=0, le=1024,
        description="torch threads for the embedding model in `ragsvc serve` without --with-model (0: torch's "
                    "choice); fewer leave cores to requests, the catalog and the indexes but slow each pass")
    embed_lanes: int = Field(
        0, ge=0, le=16,
        description="copies of the embedding model that run searches' and small ingests' passes in parallel (0: one "
                    "per core, at most 4); each holds the model's weights, and with embed_threads 0 gets "
                    "cores / lanes torch threads")
    keys_file: Path | None = Field(
        None, description="API keys file a server without the catalog reads (serve-model); unset = "
                          "<store.data_dir>/api-keys.json")

    @field_validator("host")
    @classmethod
    def _no_wildcard_by_accident(cls, host: str) -> str:
        if not host:
            raise ValueError("api host is empty; use 127.0.0.1 (local) or 0.0.0.0 (all interfaces)")
        return host

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names_only(cls, names: list[str]) -> list[str]:
        # a Host header is matched by its name alone, so a URL or a name with a port would never match
        for name in names:
            bare = name.strip().strip("[]")
            if name != "*" and (not bare or any(c in bare for c in "/ @") or (":" in bare and bare.count(":") == 1)):
                raise ValueError(f"allowed host {name!r} must be a host name or address alone (no scheme, port or "
                                 "path), e.g. rag.example.com, 10.0.0.5 or ::1; '*' accepts any")
        return names


class IndexLimitSettings(_Frozen):
    """Upper bounds on a new collection's index parameters (see ragsvc.index.spec.IndexLimits for why each
    default); a create past one answers 400 naming the parameter and its range."""

    max_num_shards: int = Field(64, ge=1, le=4096)
    max_hnsw_m: int = Field(128, ge=2, le=2048, description="HNSW graph degree M (8·M bytes a vector)")
    max_ef_construction: int = Field(2048, ge=1, le=1 << 20)
    max_ef_search: int = Field(4096, ge=1, le=1 << 20, description="also bounds the per-query ef_search")
    max_ivf_nlist: int = Field(65_536, ge=1, le=1 << 24)
    max_ivf_nprobe: int = Field(65_536, ge=1, le=1 << 24)
    max_pq_m: int = Field(256, ge=1, le=4096)
    max_shortlist: int = Field(10_000, ge=1, le=1 << 20, description="also bounds the per-query shortlist")


class ModelSettings(_Frozen):
    """The local LLM that `serve --with-model`, `serve-model`, `ask` and evals host in-process.

    `ragsvc.serving.config.EngineConfig.from_settings` turns this section into the engine's config; the
    engine's other knobs keep their defaults there.
    """

    model: str = Field("smollm2", description="packaged alias, HF folder, or .gguf path")
    dtype: str = Field("auto", description="auto, float32 or bfloat16")
    device: str = Field("auto", description="auto, cpu or cuda[:N]")
    kv_cache_bytes: int = Field(1 << 30, ge=1 << 20)
    max_num_seqs: int = Field(64, ge=1)
    num_threads: int | None = Field(None, ge=1, description="torch threads on CPU; unset leaves torch's choice")
    cache_dir: Path | None = Field(None, description="de-quantised weights cache; unset = <store.data_dir>/models")
    weights: Literal["bf16", "int8", "q4", "q4-all"] = Field(
        "bf16", description="the linears' weights: bf16 (as shipped), int8 per channel, q4 blocks (LM head int8) "
                            "or q4-all (made at load)")
    decode_graphs: Literal["auto", "off", "eager"] = Field(
        "auto", description="auto: on a CUDA GPU, decode steps replay CUDA graphs captured at start; off: never; "
                            "eager: their fixed buffers without capture (a check that runs on a CPU too)")


class ModelApiSettings(_Frozen):
    """Per-request bounds of the OpenAI-compatible routes (`serve-model`, `serve --with-model`); a request past
    one answers 400 naming the field before anything is tokenised or queued. Each may be lowered; the
    ceilings are those the wire schema enforces for everyone (ragsvc/api/openai_schemas.py)."""

    max_n: int = Field(16, ge=1, le=16, description="choices per request (prompts × n), each a sequence in the batch")
    max_tokens: int = Field(1 << 20, ge=1, le=1 << 20, description="max_tokens / max_completion_tokens (the "
                                                                    "model's context bounds it further)")
    max_prompts: int = Field(16, ge=1, le=16, description="prompts in one /v1/completions request")
    max_prompt_tokens: int = Field(1 << 20, ge=1, le=1 << 20, description="ids in one token-id prompt")
    max_messages: int = Field(1024, ge=1, le=1024, description="chat messages, and content parts in one message")
    max_text_chars: int = Field(1_000_000, ge=1, le=1_000_000,
                                description="characters in any one text (message, content part, prompt, suffix)")
    max_logprobs: int = Field(20, ge=0, le=20, description="logprobs / top_logprobs")
    max_stop: int = Field(16, ge=0, le=16, description="stop strings")


class CodeSettings(_Frozen):
    allowed_roots: list[Path] = Field(
        default_factory=list,
        description="folders under which POST /v1/repos may index code; empty means the server's working folder",
    )


class GeneratorSettings(_Frozen):
    """Which language model HyDE, the LLM reranker and answers use. With `url` set, any OpenAI-compatible
    server (ragsvc serve-model, vLLM, llama.cpp); otherwise the model this process hosts, if it hosts one."""

    url: str | None = Field(None, description="base URL including /v1, e.g. http://127.0.0.1:8001/v1; several, "
                                              "comma-separated, make a pool (least-loaded, failover)")
    model: str | None = Field(None, description="model name on that server; unset = the first it lists")
    api_key: str | None = None
    timeout_s: float = Field(120.0, gt=0, le=3600, description="read timeout of one model call")


class RerankSettings(_Frozen):
    """Rerankers a server offers; the `llm` reranker is offered whenever a generator is available."""

    embedder: str | None = Field(None, description="a local sentence-transformers folder (e.g. EmbeddingGemma)")
    embedder_query_prefix: str = Field("", max_length=256)
    embedder_document_prefix: str = Field("", max_length=256)
    cross_encoder: str | None = Field(None, description="a local sentence-transformers CrossEncoder folder")


class EvalSettings(_Frozen):
    data_root: Path | None = Field(
        None, description="folder holding the BEIR datasets that suites name with `[dataset] name` (e.g. scifact/)")
    models_root: Path | None = Field(
        None, description="folder holding the model folders that suites name (e.g. a reranker's `model`)")


class NativeSettings(BaseSettings):
    """How ragsvc.native builds the C++ kernels. Kernels are built deep inside the engine and the index, the
    first time one runs, where no settings object is passed down: `ragsvc.native` reads this section then."""

    model_config = SettingsConfigDict(env_prefix="RAGSVC_", frozen=True, extra="ignore")

    no_native: bool = Field(False, description="RAGSVC_NO_NATIVE=1: plain torch / faiss paths, no C++ kernels")
    compiler: str = Field("g++", validation_alias="CXX", description="the C++ compiler (the CXX variable)")
    cache_home: Path | None = Field(None, validation_alias="XDG_CACHE_HOME",
                                    description="built kernels go to <cache_home>/ragsvc/kernels (~/.cache)")


class ClusterSettings(_Frozen):
    address: str | None = Field(
        None, max_length=512,
        description="local (start Ray in the API process), auto (join `ray start` on this machine) or "
                    "ray://host:port (Ray Client); unset: Ray is never started or imported")
    connect_timeout_s: float = Field(30.0, gt=0, le=600, description="give up joining the cluster after this")
    deadline_ms: float = Field(2000.0, gt=0, le=600_000, description="default time a search gives Ray shard "
                               "replicas to answer (a request's deadline_ms overrides it)")
    hedge_ms: float | None = Field(None, gt=0, le=600_000, description="ask a shard's next replica when the first "
                                   "has not answered after this; unset: half the deadline. Near the p99 of healthy "
                                   "calls (README: the hedge, on and off)")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGSVC_", env_nested_delimiter="__", frozen=True)

    store: StoreSettings = StoreSettings()
    embed: EmbedSettings = EmbedSettings()
    api: ApiSettings = ApiSettings()
    index_limits: IndexLimitSettings = IndexLimitSettings()
    model: ModelSettings = ModelSettings()
    model_api: ModelApiSettings = ModelApiSettings()
    code: CodeSettings = CodeSettings()
    generator: GeneratorSettings = GeneratorSettings()
    rerank: RerankSettings = RerankSettings()
    eval: EvalSettings = EvalSettings()
    cluster: ClusterSettings = ClusterSettings()
