"""Drive both OIP models with the kserve SDK's own v2 clients, InferenceRESTClient and
InferenceGRPCClient, as a KServe user's code would; print the scores as JSON.

Runs in .venv-k8s (where the kserve SDK is installed for the manifest checks).

    kserve_clients.py HTTP_URL GRPC_TARGET MODEL IMAGE_FILE PIXELS_NPY
"""

import asyncio
import json
import sys
from pathlib import Path

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig


def requests(model: str, image: bytes, pixels: np.ndarray, binary: bool) -> dict[str, InferRequest]:
    """A file can't travel as JSON text: the REST client sends the binary tensor extension too."""
    files = InferInput("image", [1, 1], "BYTES")
    files.set_data_from_numpy(np.array([[image]], dtype=np.object_), binary_data=binary)
    tensor = InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    return {model: InferRequest(model, [files]), f"{model}_tensor": InferRequest(f"{model}_tensor", [tensor])}


async def main(http_url: str, grpc_target: str, model: str, image_file: str, pixels_file: str) -> None:
    image, pixels = Path(image_file).read_bytes(), np.load(pixels_file).astype(np.float32)
    out: dict = {}
    rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    out["rest_ready"] = await rest.is_model_ready(http_url, f"{model}_tensor")
    for name, request in requests(model, image, pixels, binary=True).items():
        response = await rest.infer(http_url, request, model_name=name)
        out[f"rest:{name}"] = response.outputs[0].as_numpy().tolist()
    await rest.close()
    grpc_client = InferenceGRPCClient(grpc_target, timeout=60)
    out["grpc_ready"] = await grpc_client.is_model_ready(f"{model}_tensor")
    for name, request in requests(model, image, pixels, binary=True).items():
        response = await grpc_client.infer(request)
        out[f"grpc:{name}"] = response.outputs[0].as_numpy().tolist()
    await grpc_client.close()
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
