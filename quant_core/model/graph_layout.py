"""The model as a graph of its quantizable layers, laid out top to bottom (a layered DAG).

Nodes are the quantizable layers plus the model's inputs and outputs; the ops between two layers
(activations, reshapes, pooling, adds...) are collapsed into the edge that joins them, which keeps
their op types as a readable chain ("Relu → MaxPool"). The layout is the classic layered one:

1. depth = length of the longest path from a model input (inputs at depth 0);
2. within a depth, nodes are ordered by the mean position of their neighbours (barycentre), sweeping
   down then up a few times, which removes most edge crossings;
3. x = position within the depth, centred on 0; y = depth.

Everything is linear in the graph's size per sweep, so hundreds of layers lay out in milliseconds.
No Streamlit, no Plotly: the figure is drawn by `ui`.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import onnx

MAX_CHAIN_OPS = 12  # op types kept per collapsed chain (the count keeps the full length)
ORDER_SWEEPS = 4  # barycentre sweeps (down then up); more rarely changes the order
# Ops whose output is metadata about their input (its shape), not its values: nothing flows through them,
# so an input's shape feeding every attention mask does not draw an edge to every layer.
METADATA_OPS = frozenset({"Shape", "Size"})


class NodeKind(StrEnum):
    LAYER = "layer"
    OP = "op"  # any other op, drawn only when the chains are expanded
    INPUT = "input"
    OUTPUT = "output"


@dataclass(frozen=True)
class GraphNode:
    """One node of the drawing: a quantizable layer (id = its ONNX node name), a model input or output."""

    id: str
    label: str
    kind: NodeKind
    op_type: str
    depth: int
    x: float


@dataclass(frozen=True)
class GraphEdge:
    """source → target, with the op types collapsed between them along one (the shortest) path."""

    source: str
    target: str
    collapsed: tuple[str, ...] = ()  # the first MAX_CHAIN_OPS op types, in order
    hidden_ops: int = 0  # how many ops the chain has in all

    def describe(self) -> str:
        """The collapsed chain in words, e.g. "Relu → MaxPool" or "direct"."""
        if not self.hidden_ops:
            return "direct"
        more = self.hidden_ops - len(self.collapsed)
        return " → ".join(self.collapsed) + (f" → … (+{more} ops)" if more > 0 else "")


@dataclass(frozen=True)
class LayerGraph:
    """The laid-out graph: nodes (graph order within each depth) and edges."""

    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]
    _by_id: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        self._by_id.update({node.id: node for node in self.nodes})

    def node(self, node_id: str) -> GraphNode:
        return self._by_id[node_id]

    @property
    def depth(self) -> int:
        """Number of levels (0 for an empty graph)."""
        return 1 + max((node.depth for node in self.nodes), default=-1)

    @property
    def width(self) -> int:
        """Most nodes on one level."""
        counts: dict[int, int] = {}
        for node in self.nodes:
            counts[node.depth] = counts.get(node.depth, 0) + 1
        return max(counts.values(), default=0)

    def predecessors(self, node_id: str) -> list[GraphEdge]:
        return [edge for edge in self.edges if edge.target == node_id]

    def successors(self, node_id: str) -> list[GraphEdge]:
        return [edge for edge in self.edges if edge.source == node_id]


def input_id(name: str) -> str:
    return f"input:{name}"


def output_id(name: str) -> str:
    return f"output:{name}"


# A path from a source (layer or model input) to a node: the op types on it (first MAX_CHAIN_OPS) and its length.
_Chain = tuple[tuple[str, ...], int]


def _extend(chain: _Chain, op_type: str) -> _Chain:
    ops, count = chain
    return (ops + (op_type,) if len(ops) < MAX_CHAIN_OPS else ops), count + 1


def _merge(into: dict[str, _Chain], source: str, chain: _Chain) -> None:
    # Keep the shortest chain to each source: it reads best and is the one a reader would follow.
    known = into.get(source)
    if known is None or chain[1] < known[1]:
        into[source] = chain


def _topological_order(nodes: Sequence[onnx.NodeProto], producer: dict[str, int]) -> list[int]:
    """Node indices in an order where every node comes after the producers of its inputs (Kahn)."""
    needs = [0] * len(nodes)
    readers: dict[int, list[int]] = {}
    for index, node in enumerate(nodes):
        sources = {producer[name] for name in node.input if name in producer and producer[name] != index}
        needs[index] = len(sources)
        for source in sources:
            readers.setdefault(source, []).append(index)
    ready = deque(index for index, count in enumerate(needs) if count == 0)
    order = []
    while ready:
        index = ready.popleft()
        order.append(index)
        for reader in readers.get(index, ()):
            needs[reader] -= 1
            if needs[reader] == 0:
                ready.append(reader)
    seen = set(order)
    order += [index for index in range(len(nodes)) if index not in seen]  # cycles (invalid ONNX): graph order
    return order


def layer_graph(model: onnx.ModelProto, layer_names: Iterable[str], *, expanded: bool = False) -> LayerGraph:
    """Lay out `model` as its layers `layer_names` (ONNX node names), inputs and outputs, top to bottom.

    `expanded=True` draws every op too (kind OP; Constant nodes left out): no chain is collapsed.

    Notes
    -----
    Initializers and Constant-only chains connect nothing, nor does a path through Shape or Size
    (`METADATA_OPS`: it carries a shape, not values) when collapsed: a collapsed chain starts at a layer
    or a model input. A layer fed by no other layer and no input (e.g. only constants) sits at depth 1
    without incoming edges. Nodes inside If / Loop / Scan bodies are not drawn; the node that holds them
    is collapsed like any other op.
    """
    graph = model.graph
    nodes = list(graph.node)
    quantizable = set(layer_names)
    # The nodes drawn: the layers, or every op but the Constants when expanded.
    layers = quantizable | ({node.name for node in nodes if node.op_type != "Constant"} if expanded else set())
    initializers = {tensor.name for tensor in graph.initializer}
    model_inputs = [value.name for value in graph.input if value.name not in initializers]
    producer = {name: index for index, node in enumerate(nodes) for name in node.output if name}
    # carry[i]: for node i, every source (layer or input) reaching its outputs without crossing a layer.
    carry: dict[int, dict[str, _Chain]] = {}
    edges: dict[tuple[str, str], _Chain] = {}

    def sources_of(tensor: str) -> dict[str, _Chain]:
        if tensor in producer:
            index = producer[tensor]
            node = nodes[index]
            return {node.name: ((), 0)} if node.name in layers else carry.get(index, {})
        return {input_id(tensor): ((), 0)} if tensor in model_inputs else {}

    topological = _topological_order(nodes, producer)
    for index in topological:
        node = nodes[index]
        reaching: dict[str, _Chain] = {}
        for tensor in node.input:
            for source, chain in sources_of(tensor).items():
                _merge(reaching, source, chain)
        if node.name in layers:
            for source, chain in reaching.items():
                if source != node.name:
                    _merge_edge(edges, source, node.name, chain)
        elif node.op_type in METADATA_OPS:
            carry[index] = {}
        else:
            carry[index] = {source: _extend(chain, node.op_type) for source, chain in reaching.items()}
    outputs = [value.name for value in graph.output]
    for name in outputs:
        for source, chain in sources_of(name).items():
            _merge_edge(edges, source, output_id(name), chain)

    kinds = {input_id(name): (NodeKind.INPUT, name, "input") for name in model_inputs}
    kinds.update({nodes[i].name: (NodeKind.LAYER if nodes[i].name in quantizable else NodeKind.OP, nodes[i].name,
                                  nodes[i].op_type) for i in topological if nodes[i].name in layers})
    kinds.update({output_id(name): (NodeKind.OUTPUT, name, "output") for name in outputs})
    order = list(kinds)  # inputs, layers in data-flow (topological) order, outputs
    edge_list = [GraphEdge(source, target, chain[0], chain[1]) for (source, target), chain in edges.items()
                 if source in kinds and target in kinds]
    depth = _depths(order, edge_list, kinds)
    x = _positions(order, edge_list, depth)
    graph_nodes = tuple(GraphNode(id=node_id, label=kinds[node_id][1], kind=kinds[node_id][0],
                                  op_type=kinds[node_id][2], depth=depth[node_id], x=x[node_id]) for node_id in order)
    return LayerGraph(nodes=graph_nodes, edges=tuple(edge_list))


def _merge_edge(edges: dict[tuple[str, str], _Chain], source: str, target: str, chain: _Chain) -> None:
    known = edges.get((source, target))
    if known is None or chain[1] < known[1]:
        edges[(source, target)] = chain


def _depths(order: list[str], edges: list[GraphEdge], kinds: dict) -> dict[str, int]:
    """Longest-path depth from the inputs (inputs 0; a layer without predecessors 1); outputs one below their
    deepest source."""
    incoming: dict[str, list[str]] = {}
    for edge in edges:
        incoming.setdefault(edge.target, []).append(edge.source)
    depth: dict[str, int] = {}
    position = {node_id: index for index, node_id in enumerate(order)}
    # `order` is topological, so a node's sources are done before it; a source later in `order` (only in a
    # cyclic, invalid graph) is ignored.
    for node_id in order:
        if kinds[node_id][0] == NodeKind.INPUT:
            depth[node_id] = 0
            continue
        before = [depth[source] for source in incoming.get(node_id, ())
                  if source in depth and position[source] < position[node_id]]
        depth[node_id] = 1 + max(before, default=0)
    return depth


def _positions(order: list[str], edges: list[GraphEdge], depth: dict[str, int]) -> dict[str, float]:
    """x of each node: its rank within its depth after barycentre sweeps, centred on 0."""
    levels: dict[int, list[str]] = {}
    for node_id in order:
        levels.setdefault(depth[node_id], []).append(node_id)
    up: dict[str, list[str]] = {}
    down: dict[str, list[str]] = {}
    for edge in edges:
        up.setdefault(edge.target, []).append(edge.source)
        down.setdefault(edge.source, []).append(edge.target)
    x = {node_id: _centred(index, len(level)) for level in levels.values() for index, node_id in enumerate(level)}
    keys = sorted(levels)
    for sweep in range(ORDER_SWEEPS):
        neighbours, sequence = (up, keys[1:]) if sweep % 2 == 0 else (down, keys[-2::-1])
        for key in sequence:
            level = levels[key]
            # Stable sort by the barycentre of the neighbours; a node without any keeps its place.
            centre = {node_id: _mean([x[n] for n in neighbours.get(node_id, ())], x[node_id]) for node_id in level}
            level.sort(key=lambda node_id: centre[node_id])
            for index, node_id in enumerate(level):
                x[node_id] = _centred(index, len(level))
    return x


def _centred(index: int, count: int) -> float:
    return index - (count - 1) / 2


def _mean(values: list[float], default: float) -> float:
    return sum(values) / len(values) if values else default
