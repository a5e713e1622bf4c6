"""Drive the server with tritonclient, as a user would, and print what it got as JSON.

Runs in .venv-clients (tritonclient's own dependencies); tests/test_oip.py starts it as a
separate program and compares its output with the model run in-process.

    triton.py http|grpc URL probe
    triton.py http|grpc URL infer K FILE...        # one request, a batch of encoded files
    triton.py http|grpc URL uint8 FILE             # one file as a UINT8 [-1] tensor
"""

import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

MODEL = "classifier"


def probe(client, protocol: str) -> dict:
    as_json = {"as_json": True} if protocol == "grpc" else {}
    return {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(MODEL),
        "server": client.get_server_metadata(**as_json),
        "metadata": client.get_model_metadata(MODEL, **as_json),
        "config": client.get_model_config(MODEL, **as_json),
    }


def infer(client, mod, files: list[str], k: int) -> dict:
    blobs = np.array([[Path(f).read_bytes()] for f in files], dtype=np.object_)
    tensor = mod.InferInput("image", list(blobs.shape), "BYTES")
    tensor.set_data_from_numpy(blobs)
    scores = client.infer(MODEL, [tensor]).as_numpy("scores")
    top = client.infer(MODEL, [tensor], outputs=[mod.InferRequestedOutput("scores", class_count=k)])
    classes = [[item.decode() for item in row] for row in top.as_numpy("scores")]
    return {"scores": scores.tolist(), "classes": classes}


def uint8(client, mod, path: str) -> dict:
    data = np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)
    tensor = mod.InferInput("image", [data.size], "UINT8")
    tensor.set_data_from_numpy(data)
    return {"scores": client.infer(MODEL, [tensor]).as_numpy("scores").tolist()}


def main(protocol: str, url: str, command: str, *args: str) -> None:
    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(url)
    try:
        if command == "probe":
            out = probe(client, protocol)
        elif command == "infer":
            out = infer(client, mod, list(args[1:]), int(args[0]))
        else:
            out = uint8(client, mod, args[0])
    except InferenceServerException as exc:  # the server's refusal is the result
        out = {"error": exc.message(), "status": exc.status()}
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
