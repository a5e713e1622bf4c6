"""TorchServe's inference API (and its management reads) as a third door onto the same model.

TorchServe was archived in August 2025; clients written against it keep working here by
changing host and port: `codec` is its wire forms (the answer, the error table, the model
descriptions), `http` the thin Flask adapter around the one gate. See docs/protocols.md,
"TorchServe".
"""
