"""The layer graph: quantizable layers joined through the ops between them, laid out top to bottom."""
import time

from onnx import helper

from quant_core.model.graph_layout import (MAX_CHAIN_OPS, NodeKind, input_id, layer_graph, output_id)
from tests.models.graphs import float_input, make, weights


def _matmul(name, x, y, w):
    return helper.make_node("MatMul", [x, w], [y], name=name)


def branching_model():
    """x -> a -> Relu -> (b, c) ; b, c -> Add -> d -> y, and a Shape of x feeding a Reshape before d."""
    nodes = [_matmul("a", "x", "ha", "wa"), helper.make_node("Relu", ["ha"], ["ra"], name="relu"),
             _matmul("b", "ra", "hb", "wb"), _matmul("c", "ra", "hc", "wc"),
             helper.make_node("Add", ["hb", "hc"], ["s"], name="add"),
             helper.make_node("Shape", ["x"], ["shape"], name="shape"),
             helper.make_node("Reshape", ["s", "shape"], ["sr"], name="reshape"),
             _matmul("d", "sr", "y", "wd")]
    return make(nodes, [float_input("x", 2, 4)], [float_input("y", 2, 4)],
                [("wa", weights(4, 4)), ("wb", weights(4, 4)), ("wc", weights(4, 4)), ("wd", weights(4, 4))])


def test_layers_are_joined_through_the_ops_between_them_which_are_kept_as_a_chain():
    graph = layer_graph(branching_model(), ["a", "b", "c", "d"])
    edges = {(edge.source, edge.target): edge.describe() for edge in graph.edges}
    assert edges == {(input_id("x"), "a"): "direct", ("a", "b"): "Relu", ("a", "c"): "Relu",
                     ("b", "d"): "Add → Reshape", ("c", "d"): "Add → Reshape", ("d", output_id("y")): "direct"}


def test_a_shape_computation_draws_no_edge():
    graph = layer_graph(branching_model(), ["a", "b", "c", "d"])
    assert (input_id("x"), "d") not in {(edge.source, edge.target) for edge in graph.edges}


def test_depth_is_the_longest_path_from_the_inputs_and_siblings_share_a_level():
    graph = layer_graph(branching_model(), ["a", "b", "c", "d"])
    depth = {node.id: node.depth for node in graph.nodes}
    assert depth == {input_id("x"): 0, "a": 1, "b": 2, "c": 2, "d": 3, output_id("y"): 4}
    assert sorted(graph.node(name).x for name in ("b", "c")) == [-0.5, 0.5], "a level is centred on 0"
    assert graph.depth == 5 and graph.width == 2


def test_inputs_and_outputs_are_marked():
    graph = layer_graph(branching_model(), ["a", "b", "c", "d"])
    kinds = {node.id: node.kind for node in graph.nodes}
    assert kinds[input_id("x")] == NodeKind.INPUT and kinds[output_id("y")] == NodeKind.OUTPUT
    assert [node.label for node in graph.nodes if node.kind == NodeKind.LAYER] == ["a", "b", "c", "d"]


def test_a_long_chain_keeps_its_first_ops_and_counts_all_of_them():
    count = MAX_CHAIN_OPS + 3
    nodes = [_matmul("first", "x", "h0", "w1")]
    nodes += [helper.make_node("Relu", [f"h{i}"], [f"h{i + 1}"], name=f"relu{i}") for i in range(count)]
    nodes.append(_matmul("last", f"h{count}", "y", "w2"))
    model = make(nodes, [float_input("x", 2, 4)], [float_input("y", 2, 4)],
                 [("w1", weights(4, 4)), ("w2", weights(4, 4))])
    edge = next(edge for edge in layer_graph(model, ["first", "last"]).edges if edge.target == "last")
    assert edge.hidden_ops == count and len(edge.collapsed) == MAX_CHAIN_OPS
    assert edge.describe().endswith("→ … (+3 ops)")


def test_nodes_listed_out_of_order_are_laid_out_by_their_data_flow():
    model = branching_model()
    reversed_nodes = list(model.graph.node)[::-1]
    del model.graph.node[:]
    model.graph.node.extend(reversed_nodes)
    depth = {node.id: node.depth for node in layer_graph(model, ["a", "b", "c", "d"]).nodes}
    assert depth["a"] < depth["b"] == depth["c"] < depth["d"]


def test_three_hundred_layers_lay_out_in_well_under_a_second():
    nodes, previous = [], "x"
    for index in range(300):
        # Two branches every layer, joined by an Add: a wide, deep graph like a detector's head.
        left, right = f"l{index}", f"r{index}"
        nodes += [_matmul(left, previous, f"{left}_y", "w"), _matmul(right, previous, f"{right}_y", "w"),
                  helper.make_node("Add", [f"{left}_y", f"{right}_y"], [f"s{index}"], name=f"add{index}")]
        previous = f"s{index}"
    nodes.append(helper.make_node("Identity", [previous], ["y"], name="out"))
    model = make(nodes, [float_input("x", 2, 4)], [float_input("y", 2, 4)], [("w", weights(4, 4))])
    started = time.perf_counter()
    graph = layer_graph(model, [node.name for node in nodes if node.op_type == "MatMul"])
    elapsed = time.perf_counter() - started
    assert len(graph.nodes) == 602 and graph.depth == 302 and graph.width == 2
    assert elapsed < 1.0, f"{elapsed:.2f} s"


def test_expanded_every_op_is_a_node_and_no_chain_is_collapsed():
    graph = layer_graph(branching_model(), ["a", "b", "c", "d"], expanded=True)
    kinds = {node.id: node.kind for node in graph.nodes}
    assert {name for name, kind in kinds.items() if kind == NodeKind.OP} == {"relu", "add", "shape", "reshape"}
    assert all(edge.hidden_ops == 0 for edge in graph.edges)
    assert {(edge.source, edge.target) for edge in graph.edges} >= {("a", "relu"), ("relu", "b"), ("add", "reshape"),
                                                                     ("shape", "reshape"), ("reshape", "d")}
