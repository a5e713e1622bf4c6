"""The Open Inference Protocol's infer request, checked by one schema for both transports.

pydantic (strict types: `true` is not a number, "5" is not a count), since it measured faster
here than jsonschema on the same request (scripts/bench_schema.py: a typical one-image
request in 7 us against 224 us on a 2-core AVX2 VM). The HTTP
codec validates the JSON header with it; the gRPC codec turns the message's fields and
parameters into the same dict first, so a string where a number belongs is refused the same
way on both doors. The tensor data itself is checked by the codec, per datatype.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from app.core.errors import InvalidInput

MAX_DIMS, MAX_TENSORS = 8, 16
Name = Annotated[StrictStr, Field(min_length=1, max_length=256)]
Dim = Annotated[StrictInt, Field(ge=0, le=2**31 - 1)]
Value = StrictBool | StrictInt | StrictFloat | Annotated[StrictStr, Field(max_length=1024)]


class _Parameters(BaseModel):
    """Parameters we read are typed; others are allowed (the protocol lets clients add any)
    but must still be scalars."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, Value]


class InputParameters(_Parameters):
    binary_data_size: Annotated[StrictInt, Field(ge=0)] | None = None


class OutputParameters(_Parameters):
    classification: Annotated[StrictInt, Field(ge=0)] = 0
    binary_data: StrictBool | None = None


class RequestParameters(_Parameters):
    binary_data_output: StrictBool = False


class RequestInput(BaseModel):
    name: Name
    shape: Annotated[list[Dim], Field(max_length=MAX_DIMS)]
    datatype: Annotated[StrictStr, Field(max_length=16)]
    parameters: InputParameters = InputParameters()
    data: list | None = None  # nested per the shape; its elements are the codec's to check


class RequestOutput(BaseModel):
    name: Name
    parameters: OutputParameters = OutputParameters()


class InferenceRequest(BaseModel):
    id: Annotated[StrictStr, Field(max_length=256)] = ""
    parameters: RequestParameters = RequestParameters()
    inputs: Annotated[list[RequestInput], Field(min_length=1, max_length=MAX_TENSORS)]
    outputs: Annotated[list[RequestOutput], Field(max_length=MAX_TENSORS)] = []


def validate(head: object) -> InferenceRequest:
    """The request's structure, or a 400 that says where it is wrong."""
    try:
        return InferenceRequest.model_validate(head)
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False)
        where = "; ".join(f"{'.'.join(map(str, p['loc'])) or 'request'}: {p['msg']}" for p in problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise InvalidInput("invalid_request", f"the inference request is malformed: {where}{more}") from None
