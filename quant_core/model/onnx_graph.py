"""Walks over an ONNX graph that see into its subgraphs (If / Loop / Scan bodies).

A subgraph may read any name of the graphs around it, an initializer included, without the outer
graph's nodes listing it: code that asks "is this tensor read?" must look inside.
"""
from __future__ import annotations

from collections.abc import Iterator

import onnx


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Yield every node of `graph` and of its subgraphs, depth first, each node before its subgraphs' nodes."""
    for node in graph.node:
        yield node
        yield from subgraph_nodes(node)


def subgraph_nodes(node: onnx.NodeProto) -> Iterator[onnx.NodeProto]:
    """Yield every node of the subgraphs a node holds in its attributes (If branches, Loop and Scan bodies)."""
    for attribute in node.attribute:
        subgraphs = ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs)
        for subgraph in subgraphs:
            yield from all_nodes(subgraph)


def names_read(graph: onnx.GraphProto) -> set[str]:
    """Return every tensor name a node of `graph` or of its subgraphs reads, plus the graph's outputs."""
    names = {name for node in all_nodes(graph) for name in node.input if name}
    names.update(value.name for value in graph.output)
    return names
