"""Print the messages and service of a generated `inference` package as JSON, for comparison.

.venv-clients/bin/python descriptors.py    # tritonclient's own stubs
dump([pb.DESCRIPTOR])                      # ours (app/oip/inference.proto), in-process
"""

import json


def repeated(field) -> bool:
    is_repeated = getattr(field, "is_repeated", None)  # protobuf 7 deprecates `label`
    return bool(is_repeated) if is_repeated is not None else field.label == 3


def fields(message) -> dict:
    # Number, wire type and whether repeated: what decides compatibility on the wire.
    out = {f.name: [f.number, f.type, repeated(f)] for f in message.fields}
    for nested in message.nested_types:
        if not nested.GetOptions().map_entry:
            out.update({f"{nested.name}.{k}": v for k, v in fields(nested).items()})
    return out


def dump(files) -> dict:
    messages, methods = {}, {}
    for file in files:
        for name, message in file.message_types_by_name.items():
            messages[name] = fields(message)
        for service in file.services_by_name.values():
            for m in service.methods:
                methods[m.name] = [m.input_type.full_name, m.output_type.full_name]
    return {"messages": messages, "methods": methods}


if __name__ == "__main__":
    from tritonclient.grpc import model_config_pb2, service_pb2

    print(json.dumps(dump([service_pb2.DESCRIPTOR, model_config_pb2.DESCRIPTOR])))
