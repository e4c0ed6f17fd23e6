"""The functional ``Model``: a graph of layer calls walked forward and, in reverse, backward.

``forward`` runs the nodes in topological order and keeps a tape of ``(node, cache)``; ``backward``
walks the tape in reverse, adding gradients where a tensor fans out (``+=``) and handing each layer
the gradient of its output. Parameter gradients are summed over every call of a layer and left in
``layer.grads``. ``run`` (behind ``model(x)`` and ``predict``) walks the graph without a tape.

Other modules use the model through its public surface only: ``inputs``, ``outputs``, ``layers``,
``nodes``, ``single_input`` / ``single_output``, ``run``, ``forward`` / ``backward``, ``clear_tape``,
``add_device_listener``, the weight accessors and ``count_params`` / ``count_macs``.

Keras' training API (``compile``, ``fit``, ``evaluate``, ``predict``) is here too, as thin methods: the
training loop itself is :mod:`tinynet.engine`, shared with :class:`tinynet.training.Trainer`.
"""
from __future__ import annotations

import functools
import inspect

import numpy as np

from . import backend, fusion
from .checks import check_training
from .layers.base import Layer, ShapeError, SymbolicTensor, format_shape, valid_name, weight_list
from .layers.base import check_finite as check_finite_array
from .layers.core import InputLayer


@functools.cache
def _skips_input_grad(cls):
    """Whether ``backward(g, cache, input_grad=False)`` may be asked of a layer of class ``cls``: the class says it
    can, and a subclass did not override ``backward`` or ``_backward`` with the signature without ``input_grad``."""
    return (cls.can_skip_input_grad and cls.backward is Layer.backward
            and "input_grad" in inspect.signature(cls._backward).parameters)


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


class Model:
    """A Keras-style functional model with one or several inputs and outputs.

    Parameters
    ----------
    inputs : SymbolicTensor or list of SymbolicTensor
        What :func:`tinynet.layers.Input` returned.
    outputs : SymbolicTensor or list of SymbolicTensor
    name : str, optional

    Attributes
    ----------
    inputs, outputs : list of SymbolicTensor
        Always lists; :attr:`single_input` / :attr:`single_output` tell whether one tensor, not a list, was given.
    layers : list of Layer
        Each layer once, in the order its first call runs.
    device : str
        ``'cpu'`` or ``'gpu'``, as set by :meth:`to`.

    Examples
    --------
    >>> x = Input((32, 32, 3)); y = Conv2D(8, 3, activation='relu')(x)
    >>> m = Model(x, [Dense(10)(Flatten()(y)), GlobalAveragePooling2D()(y)])
    """

    def __init__(self, inputs, outputs, name="model"):
        if not valid_name(name):
            raise ValueError(f"Model: name must be a non-empty string without '/' or control characters, got "
                             f"{name!r}")
        self.name = name
        self._single_input = not isinstance(inputs, (list, tuple))
        self._single_output = not isinstance(outputs, (list, tuple))
        self.inputs = _as_list(inputs)
        self.outputs = _as_list(outputs)
        for what, tensors in (("inputs", self.inputs), ("outputs", self.outputs)):
            if not tensors:
                raise ValueError(f"Model '{name}': {what} is empty; a model needs at least one input and one "
                                 f"output tensor")
        for t in self.inputs + self.outputs:
            if not isinstance(t, SymbolicTensor):
                raise TypeError(f"Model '{name}': inputs and outputs must be symbolic tensors, got {type(t).__name__}")
        for t in self.inputs:
            if not isinstance(t.node.layer, InputLayer):
                raise ValueError(f"Model '{name}': input '{t.name}' is not an Input(...) tensor")
        repeated = [t.name for i, t in enumerate(self.inputs) if any(t is u for u in self.inputs[:i])]
        if repeated:  # each input takes its own array: a second place for one tensor would silently drop one
            raise ValueError(f"Model '{name}': inputs must be distinct tensors; {sorted(set(repeated))} is listed "
                             f"more than once in {[t.name for t in self.inputs]}")
        self._nodes = self._topological_nodes()
        self.layers, seen = [], set()
        for node in self._nodes:  # by identity, in one pass (a list's `in` made a deep model quadratic to build)
            if id(node.layer) not in seen:
                seen.add(id(node.layer))
                self.layers.append(node.layer)
        names, duplicated = set(), set()
        for layer in self.layers:
            (duplicated if layer.name in names else names).add(layer.name)
        duplicated = sorted(duplicated)
        if duplicated:
            raise ValueError(f"Model '{name}': layer names must be unique, repeated: {duplicated}")
        self._tape = None          # [(node, CallCache), ...] of the last successful forward
        self._groups = None        # sibling 1×1 convolutions fused into one product (found on first use)
        self._last_read_positions = None  # where the walk may drop each activation (found on first use)
        self._batch_size = 0       # its batch size, and whether its inputs were on the GPU
        self._tape_on_gpu = False
        self.device = "cpu"
        self._device_listeners = []  # e.g. optimizers whose state must move with the model
        self._training = None        # what compile() builds: tinynet.engine.KerasState
        self.stop_training = False   # a callback sets it to end fit() after the current epoch
        self.history = None          # the History of the last fit()
        self.running_engine = None   # the training loop running now (fit's, or a Trainer): see optimizer

    @property
    def single_input(self) -> bool:
        """True when the model was built on one input tensor (not a list): it takes and returns one array for it."""
        return self._single_input

    @property
    def single_output(self) -> bool:
        """True when the model was built with one output tensor (not a list): it returns one array, not a list."""
        return self._single_output

    def _unpack_outputs(self, outs):
        return outs[0] if self._single_output else outs

    # ------------------------------------------------------------------ graph
    def _topological_nodes(self):
        order, state = [], {}
        input_ids = {id(t) for t in self.inputs}

        def visit(root):
            # a depth-first walk with its own stack (not Python's: a chain of a thousand layers would pass the
            # recursion limit), each node after the nodes of its inputs, in their order
            stack = [(root, None)]  # (tensor, iterator over its node's inputs once entered)
            while stack:
                tensor, pending = stack[-1]
                node = tensor.node
                if pending is None:
                    key = id(node)
                    if state.get(key) == "done":
                        stack.pop()
                        continue
                    if state.get(key) == "active":
                        raise ValueError(f"Model '{self.name}': the graph has a cycle at '{node.layer.name}'")
                    state[key] = "active"
                    if isinstance(node.layer, InputLayer) and id(tensor) not in input_ids:
                        raise ValueError(
                            f"Model '{self.name}': graph disconnected: output needs input '{node.layer.name}' "
                            f"{format_shape(tensor.example_shape)}, which is not among the model's inputs")
                    pending = iter(node.inputs)
                    stack[-1] = (tensor, pending)
                child = next(pending, None)
                if child is not None:
                    stack.append((child, None))
                else:
                    state[id(node)] = "done"
                    order.append(node)
                    stack.pop()

        for t in self.inputs:  # inputs first, in the order given
            visit(t)
        for t in self.outputs:
            visit(t)
        return order

    def get_layer(self, name=None, index=None):
        """Return the layer called ``name``, or the one at ``index`` in :attr:`layers` (Keras' signature; a
        negative index counts from the end); raise ``ValueError`` listing the names otherwise."""
        if (name is None) == (index is None):
            raise ValueError(f"Model '{self.name}': get_layer takes a layer name or an index (one of them), got "
                             f"name={name!r}, index={index!r}")
        if index is not None:
            if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
                raise TypeError(f"Model '{self.name}': get_layer index must be an integer, got {index!r}")
            if not -len(self.layers) <= index < len(self.layers):
                raise ValueError(f"Model '{self.name}': get_layer index {index} is out of range; the model has "
                                 f"{len(self.layers)} layers")
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"Model '{self.name}': no layer named {name!r}; "
                         f"layers: {[layer.name for layer in self.layers]}")

    # ------------------------------------------------------------------ running
    def _input_list(self, x):
        """``x`` as a list with one entry per input: a dict mapped by input name (as Keras); for a model of
        several inputs a list or tuple as it is (one array per input); for a model of one input, a list of one
        array of the input's rank as ``[x]``, and any other list or tuple (e.g. a nested list of rows) as the
        data itself, read by ``np.asarray``, as :meth:`fit` and :meth:`evaluate` read it.

        Raises
        ------
        ValueError
            ``x`` is None, a dict whose keys are not exactly the input names (both listed), or a dataset object
            or a generator (pass arrays).
        TypeError
            ``x`` holds a symbolic tensor: a model runs on arrays, it is not a layer of another graph.
        """
        from .engine import refuse_unsupported_x

        names = [t.name for t in self.inputs]
        if x is None:
            raise ValueError(f"Model '{self.name}': x is required (one array per input {names})")
        refuse_unsupported_x(x, f"Model '{self.name}'")
        if isinstance(x, (list, tuple)):
            self._refuse_symbolic(list(x))
        if isinstance(x, dict):
            unknown = sorted(str(key) for key in x if key not in names)
            missing = [n for n in names if n not in x]
            if unknown or missing:
                raise ValueError(f"Model '{self.name}': x as a dict needs the input names {names} as keys; "
                                 f"missing {missing}, unknown {unknown}")
            xs = [x[n] for n in names]
        elif len(self.inputs) > 1:
            xs = _as_list(x)
        elif isinstance(x, (list, tuple)) and len(x) == 1 and np.ndim(x[0]) == len(self.inputs[0].example_shape) + 1:
            xs = [x[0]]  # [array] for the one input
        else:
            xs = [x]  # an array, or a (nested) list of its rows, as fit reads it
        self._refuse_symbolic(xs)
        return xs

    def _refuse_symbolic(self, xs):
        """Raise ``TypeError`` when ``xs`` (a list) holds a symbolic tensor: calling a model on ``Input(...)``
        (using it as a layer of a bigger graph) is not supported; its layers can be called instead."""
        for a in xs:
            if isinstance(a, SymbolicTensor):
                raise TypeError(f"Model '{self.name}': got the symbolic tensor {a!r}; a model runs on arrays "
                                f"(model(x), predict(x)). Models cannot be nested in another graph: call the "
                                f"layers on the tensor instead")

    def _prepare_inputs(self, x, cast=True):
        """The input arrays, after checking count, dtype kind, shape and batch size; cast to each Input's dtype
        unless ``cast`` is False (``predict`` casts batch by batch, so a large uint8 set is never copied whole)."""
        xs = self._input_list(x)
        if len(xs) != len(self.inputs):
            raise ValueError(f"Model '{self.name}': expected {len(self.inputs)} input arrays, got {len(xs)}")
        prepared = []
        for t, a in zip(self.inputs, xs):
            what = f"Model '{self.name}': input '{t.name}'"
            if not isinstance(a, np.ndarray) and not backend.is_gpu_array(a):
                from .engine import refuse_unsupported_x

                refuse_unsupported_x(a, f"Model '{self.name}'", f"x for input '{t.name}'")
                try:
                    a = np.asarray(a)
                except (ValueError, TypeError) as error:
                    raise TypeError(f"{what} is not an array ({type(a).__name__}: {error})") from None
            if a.dtype.kind not in "biuf":  # complex, object, text, dates: no silent cast (it would drop data)
                raise TypeError(f"{what} has dtype {a.dtype}; expected real numbers (floats, integers or booleans, "
                                f"cast to {t.dtype})")
            if tuple(a.shape[1:]) != t.example_shape or a.ndim == 0:
                raise ShapeError(f"{what} expects shape {format_shape(t.example_shape)}, got {tuple(a.shape)}")
            prepared.append(a.astype(t.dtype, copy=False) if cast else a)
        sizes = {len(a) for a in prepared}
        if len(sizes) > 1:
            raise ShapeError(f"Model '{self.name}': the inputs have different batch sizes: "
                             + ", ".join(f"'{t.name}' {tuple(a.shape)}" for t, a in zip(self.inputs, prepared)))
        return prepared

    def _empty_outputs(self, xs):
        """Empty arrays of each output's shape and dtype, on the inputs' device (for an empty batch)."""
        xp = backend.get_array_module(*xs)
        return [xp.zeros((0,) + t.example_shape, dtype=t.dtype) for t in self.outputs]

    def _walk(self, x, training, record, check_finite=False):
        """Walk the graph once; return the outputs (a list) and, when ``record``, the tape ``[(node, cache), ...]``.

        Every layer call goes through ``Layer.forward``, which checks its inputs (O(1) per layer).
        """
        training = check_training(f"model '{self.name}'", training)
        values = {}
        prepared = self._prepare_inputs(x)
        batch = len(prepared[0])
        if batch == 0 and not record:
            return self._empty_outputs(prepared), None
        for t, a in zip(self.inputs, prepared):
            values[id(t)] = a
        tape = [] if record else None
        groups = self._fusion_groups() if backend.fast_paths_enabled() else {}
        fused = set()  # ids of the nodes a fused group has already run in this walk
        last_reads = self._last_reads()
        for position, node in enumerate(self._nodes):
            if not isinstance(node.layer, InputLayer) and id(node) not in fused:
                self._run_node(node, groups.get(id(node)), values, fused, tape, training, check_finite, batch)
            for key in last_reads.get(position, ()):  # no later layer reads it: free it (inference memory)
                del values[key]
        outs = [values[id(t)] for t in self.outputs]
        return outs, tape

    @staticmethod
    def _run_node(node, group, values, fused, tape, training, check_finite, batch):
        """One step of :meth:`_walk`: the node's layer call, or the fused group that starts at this node."""
        if group is not None and group.accepts(values[id(group.input)]):
            ys, cache = group.forward(values[id(group.input)])
            for member, y in zip(group.nodes, ys):
                if check_finite:
                    check_finite_array(member.layer, "output", y, batch)
                values[id(member.output)] = y
                fused.add(id(member))
            if tape is not None:
                tape.append((group, cache))
            return
        layer = node.layer
        y, cache = layer.forward(node.layer_args([values[id(t)] for t in node.inputs]), training)
        if check_finite:
            check_finite_array(layer, "output", y, batch)
        values[id(node.output)] = y
        if tape is not None:
            tape.append((node, cache))

    def _last_reads(self):
        """``position -> [id(tensor), ...]``: the tensors whose last reader is the node at that position of the
        walk (model outputs are never listed); the walk drops its reference to each there, so a forward pass
        holds only the activations still to be read (and, when training, what the tape keeps)."""
        if self._last_read_positions is None:
            last = {}
            for position, node in enumerate(self._nodes):
                for t in node.inputs:
                    last[id(t)] = position
            outputs = {id(t) for t in self.outputs}
            by_position = {}
            for key, position in last.items():
                if key not in outputs:
                    by_position.setdefault(position, []).append(key)
            self._last_read_positions = by_position
        return self._last_read_positions

    def _fusion_groups(self):
        """``id(node) -> PointwiseGroup`` for the sibling 1×1 convolutions that run as one product
        (:mod:`tinynet.fusion`); found once per model."""
        if self._groups is None:
            self._groups = fusion.find_groups(self._nodes)
        return self._groups

    def run(self, x, training=False):
        """Walk the graph once without keeping a tape (nothing for :meth:`backward`); the walk behind ``model(x)``
        and :meth:`predict`.

        Parameters
        ----------
        x : array, list of arrays or dict by input name
            One batch per input, shapes ``(N, *input_shape)``; N may be 0. Checked and cast as in
            :meth:`forward`.
        training : bool
            Dropout active and BatchNormalization on batch statistics (updating its moving ones) when True.

        Returns
        -------
        list of arrays
            One per output, in the order of ``outputs``, even for a single-output model (``model(x)`` unpacks
            it); NumPy or CuPy like the inputs. An empty batch gives empty arrays, ``(0, *output_shape)``.
        """
        return self._walk(x, training, record=False)[0]

    def clear_tape(self):
        """Drop what the last :meth:`forward` kept for :meth:`backward` (its caches: memory of the size of every
        activation); :meth:`backward` then raises until the next :meth:`forward`."""
        self._tape = None

    def forward(self, x, training=True, check_finite=False):
        """Run the model and keep what :meth:`backward` needs.

        Parameters
        ----------
        x : array, list of arrays or dict by input name
            One batch per input, shapes ``(N, *input_shape)`` with N >= 1; cast to each Input's dtype (integers
            and booleans included; complex and object arrays raise ``TypeError``).
        training : bool
            Dropout active and BatchNormalization on batch statistics (updating its moving ones) when True.
        check_finite : bool
            Check every layer's output for NaN and inf (one extra pass over each output) and raise
            :class:`~tinynet.layers.base.NonFiniteError` naming the first layer, in execution order, whose
            output is not finite.

        Returns
        -------
        array, or list of arrays in the order of ``outputs``
            The very arrays that the tape keeps for :meth:`backward` (an output that is a model input is the
            caller's array itself): change a copy, not them, before ``backward``, whose derivatives read them
            (a ReLU's mask, a softmax's probabilities). NumPy has no version counter to catch such an edit, as
            PyTorch's autograd does.

        Raises
        ------
        ValueError
            On an empty batch (use :meth:`predict` or ``model(x)`` for inference on a batch that may be empty).
        NonFiniteError
            With ``check_finite=True``. Like any error during the walk, it leaves the model as it was before the
            call: no tape, and BatchNormalization's moving statistics restored.
        """
        self.clear_tape()  # a failed forward must not leave an older tape for backward
        prepared = self._prepare_inputs(x)
        if len(prepared[0]) == 0:
            raise ValueError(f"Model '{self.name}': forward got an empty batch (shape {tuple(prepared[0].shape)}); "
                             f"training needs at least one example (predict() and model(x) accept empty batches)")
        # layers replace, never mutate, the arrays they update (BatchNormalization's statistics): keeping the
        # lists of references is enough to undo a walk that fails half-way
        before = [(layer, list(layer.weights)) for layer in self.layers] if training else []
        try:
            outs, tape = self._walk(prepared, training, record=True, check_finite=check_finite)
        except BaseException:
            for layer, weights in before:
                layer.weights[:] = weights
            raise
        self._tape, self._batch_size = tape, len(prepared[0])
        self._tape_on_gpu = backend.is_gpu_array(prepared[0])
        return self._unpack_outputs(outs)

    def _check_output_grad(self, tensor, g):
        """``g`` as an array for ``tensor`` of this batch: floating, same device, shape ``(N, *output_shape)``."""
        what = f"Model '{self.name}': gradient for output '{tensor.name}'"
        if not isinstance(g, np.ndarray) and not backend.is_gpu_array(g):
            g = np.asarray(g)
        if g.dtype.kind != "f":
            raise TypeError(f"{what} has dtype {g.dtype}, expected a floating dtype")
        expected = (self._batch_size,) + tensor.example_shape
        if tuple(g.shape) != expected:
            raise ShapeError(f"{what} has shape {tuple(g.shape)}, expected {expected}")
        on_gpu = self._tape_on_gpu
        if backend.is_gpu_array(g) != on_gpu:
            raise TypeError(f"{what} is on {'gpu' if not on_gpu else 'cpu'}, the outputs of the last forward on "
                            f"{'gpu' if on_gpu else 'cpu'}")
        return g

    def backward(self, output_grads, check_finite=False, input_grads=True, retain_tape=True):
        """Back-propagate ``∂L/∂outputs`` through the last :meth:`forward`.

        Parameters
        ----------
        output_grads : array or list of arrays (None for an output that does not enter the loss)
        check_finite : bool
            Check every input gradient and parameter gradient for NaN and inf and raise
            :class:`~tinynet.layers.base.NonFiniteError` naming the first layer, in backward order.
        input_grads : bool
            Compute ``∂L/∂inputs`` (default). Training needs only the parameters' gradients: with ``False``
            the layers that read only model inputs skip their input gradient where they can (a first
            convolution saves a matrix product and a col2im) and ``None`` is returned.
        retain_tape : bool
            Keep what the forward pass kept, so that ``backward`` can run again on it (default). With ``False``
            (PyTorch's ``retain_graph=False``, what training does) each layer's cache is dropped as soon as its
            backward has run: the activations of the upper layers are freed while the lower ones are still being
            differentiated, which lowers the peak memory of a train step; a second ``backward`` then raises
            until the next :meth:`forward`, also after an error.

        Returns
        -------
        ∂L/∂inputs : array or list of arrays (None with ``input_grads=False``). Each layer's parameter
        gradients are left in ``layer.grads`` (summed over every call of the layer; ``None`` for non-trainable
        weights). They are written only once the whole walk has succeeded: after an error every ``layer.grads``
        is as it was.
        """
        if self._tape is None:
            raise RuntimeError(f"Model '{self.name}': call forward(x) before backward(...)")
        grads_out = _as_list(output_grads) if not self._single_output else [output_grads]
        if len(grads_out) != len(self.outputs):
            raise ValueError(f"Model '{self.name}': expected {len(self.outputs)} output gradients, "
                             f"got {len(grads_out)}")
        grads = {}
        for t, g in zip(self.outputs, grads_out):
            if g is not None:
                self._accumulate(grads, t, self._check_output_grad(t, g))
        batch = self._batch_size
        model_inputs = {id(t) for t in self.inputs}
        owned = set()  # ids of tensors whose gradient is an array this walk made (a sum): safe to add into
        param_grads = {id(layer): [None] * len(layer.weights) for layer in self.layers}
        tape = self._tape
        if not retain_tape:
            self._tape = None  # this walk empties it
        for step in range(len(tape) - 1, -1, -1):
            node, cache = tape[step]
            if not retain_tape:
                tape[step] = None  # the cache dies once this layer's backward is done with it
            if isinstance(node, fusion.PointwiseGroup):
                self._backward_group(node, cache, grads, param_grads, input_grads or id(node.input) not in model_inputs,
                                     check_finite, owned)
                continue
            g = grads.pop(id(node.output), None)
            if g is None:
                continue
            layer = node.layer
            if input_grads or not _skips_input_grad(type(layer)) or not all(id(t) in model_inputs
                                                                            for t in node.inputs):
                gx, pgrads = layer.backward(g, cache)
            else:
                gx, pgrads = layer.backward(g, cache, input_grad=False)
                gx = node.layer_args([None] * len(node.inputs))
            gxs = node.unpack_input_grads(gx)
            if check_finite:
                for gi in gxs:
                    if gi is not None:
                        check_finite_array(layer, "input gradient", gi, batch)
            self._add_param_grads(layer, pgrads, param_grads, check_finite)
            for t, gi in zip(node.inputs, gxs):
                if gi is not None:
                    self._accumulate(grads, t, gi, owned)
        for layer in self.layers:  # a layer that no gradient reached gets zeros, never stale values
            mine = param_grads[id(layer)]
            for i, (w, trainable) in enumerate(zip(layer.weights, layer.trainable_flags)):
                if trainable and mine[i] is None:
                    mine[i] = backend.get_array_module(w).zeros_like(w)
            layer.grads = mine
        if not input_grads:
            return None
        result = []
        xp = backend.require_gpu() if self._tape_on_gpu else np
        for t in self.inputs:
            g = grads.get(id(t))
            if g is None:  # the loss does not depend on this input
                g = xp.zeros((batch,) + t.example_shape, t.dtype)
            result.append(g)
        return result[0] if self._single_input else result

    def clear_gradients(self):
        """Drop every layer's parameter gradients (``layer.grads`` become ``None``), as PyTorch's
        ``optimizer.zero_grad()`` (``set_to_none=True``, its default) does.

        :meth:`backward` writes the new gradients only once its whole walk has succeeded, so until then the
        previous step's gradients stay alive beside the new ones: one more array of every weight's size at the
        end of the walk, where a train step's memory peaks (51 MiB for the paper GoogLeNet). Training
        (:meth:`fit`, :meth:`train_on_batch`) clears them before each backward pass; an optimizer step without
        a new backward pass then refuses to run (no gradient) instead of applying the old ones again.
        """
        for layer in self.layers:
            layer.grads = [None] * len(layer.weights)

    def _backward_group(self, group, cache, grads, param_grads, input_grad, check_finite, owned):
        """Backward of a fused group of 1×1 convolutions (the twin of one layer's step in :meth:`backward`)."""
        gys = [grads.pop(id(member.output), None) for member in group.nodes]
        if all(g is None for g in gys):
            return
        gx, per_layer = group.backward(gys, cache, input_grad)
        for layer, pgrads in zip(group.layers, per_layer):
            if pgrads is not None:
                self._add_param_grads(layer, pgrads, param_grads, check_finite)
        if gx is not None:
            if check_finite:
                check_finite_array(group.layers[0], "input gradient", gx, self._batch_size)
            self._accumulate(grads, group.input, gx, owned)

    def _add_param_grads(self, layer, pgrads, param_grads, check_finite):
        """Add one call's parameter gradients to ``layer``'s sums (a shared layer gets one per call), checking
        them first with ``check_finite``."""
        mine = param_grads[id(layer)]
        for i, (name, pg) in enumerate(zip(layer.weight_names, pgrads)):
            if pg is None:
                continue
            if check_finite:
                check_finite_array(layer, f"gradient of weight '{name}'", pg, self._batch_size)
            mine[i] = pg if mine[i] is None else mine[i] + pg

    @staticmethod
    def _accumulate(grads, tensor, g, owned=None):
        """Add ``g`` to the gradient of ``tensor`` in ``grads`` (several consumers of one tensor: fan-out).

        The first gradient is stored as it is (it may be a view, or the caller's array); the first sum makes a
        new array, which later sums then add into in place (``owned`` remembers which arrays are such sums):
        a tensor read by four branches costs one new array, not three.
        """
        key = id(tensor)
        if key not in grads:
            grads[key] = g
        elif owned is not None and key in owned:
            grads[key] += g
        else:
            grads[key] = grads[key] + g
            if owned is not None:
                owned.add(key)

    def predict(self, x, batch_size=None, verbose=0):
        """Inference in batches (no caches kept); returns NumPy or CuPy arrays like the input.

        Parameters
        ----------
        x : array, list of arrays or dict by input name
            One per input, ``(N, *input_shape)``; N may be 0 (empty outputs, ``(0, *output_shape)``). A model of
            one input reads a (nested) list as its data, as :meth:`fit` does. Values are not checked: NaN or
            inf in ``x`` give NaN or inf in the outputs (as Keras), where :meth:`fit` and :meth:`evaluate`
            refuse them.
        batch_size : int, default 32
        verbose : {0, 1, 'auto'}, default 0
            1 or ``'auto'``: a progress bar over the batches (Keras shows one by default; tinynet is quiet).

        Returns
        -------
        array, or list of arrays in the order of ``outputs``
        """
        batch_size = 32 if batch_size is None else batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"Model '{self.name}': predict batch_size must be an integer >= 1, got {batch_size!r}")
        if verbose not in (0, 1, 2, "auto") or isinstance(verbose, bool):
            raise ValueError(f"Model '{self.name}': predict verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
        xs = self._prepare_inputs(x, cast=False)
        n = len(xs[0])
        if n == 0:
            outs = self._empty_outputs(xs)
        else:
            bar = None
            if verbose in (1, "auto"):
                from tqdm.auto import tqdm

                bar = tqdm(total=-(-n // batch_size), unit="step", leave=True, dynamic_ncols=True)
            chunks = []
            for start in range(0, n, batch_size):
                part = [a[start:start + batch_size] for a in xs]
                chunks.append(self.run(part, training=False))
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
            xp = backend.get_array_module(*chunks[0])
            outs = [xp.concatenate([c[i] for c in chunks], axis=0) for i in range(len(self.outputs))]
        return self._unpack_outputs(outs)

    # ------------------------------------------------------------------ training (Keras' API)
    def compile(self, optimizer="adam", loss=None, loss_weights=None, metrics=None, weighted_metrics=None):
        """Configure the model for :meth:`fit` and :meth:`evaluate` (Keras' ``Model.compile``).

        Parameters
        ----------
        optimizer : str or tinynet.optimizers.Optimizer, default 'adam'
            ``'adam'`` or ``'sgd'`` (Keras' defaults), or an object, e.g.
            ``SGD(learning_rate=ExponentialDecay(...), momentum=0.9)``.
        loss : str, tinynet.losses.Loss, callable, list or dict
            ``'categorical_crossentropy'`` (one-hot labels), ``'sparse_categorical_crossentropy'`` (class
            indices), ``'binary_crossentropy'`` (targets in [0, 1], e.g. a sigmoid output), ``'mse'`` /
            ``'mean_squared_error'``, ``'mae'`` / ``'mean_absolute_error'``, a loss object
            (``CategoricalCrossentropy(from_logits=True)``,
            ``BinaryCrossentropy(from_logits=True)``, ``MeanSquaredError()``, ...), a function
            ``fn(y_pred, labels) -> (loss, grad)``. One loss applies to every output; a list gives one per
            output (``None``: the output takes no part in the loss) and a dict one per output name.
        loss_weights : float, list or dict, optional
            Per output (default 1.0): the loss is :math:`\\sum_k w_k L_k`; e.g. GoogLeNet's
            ``[0.3, 0.3, 1.0]``.
        metrics : list or dict, optional
            ``['accuracy']`` for one output; for several, one entry (a metric or a list) per output, or a dict
            by output name. Names as Keras: ``'accuracy'`` (resolved from the shapes as Keras 3 does: binary
            accuracy for a one-unit output), ``'categorical_accuracy'``, ``'sparse_categorical_accuracy'``,
            ``'top_k_categorical_accuracy'``, ``'sparse_top_k_categorical_accuracy'``, ``'binary_accuracy'``,
            ``'mse'`` / ``'mean_squared_error'``, ``'mae'`` / ``'mean_absolute_error'``, or :mod:`tinynet.metrics`
            objects. They ignore sample weights, as Keras.
        weighted_metrics : list or dict, optional
            As ``metrics``, but weighted by ``fit``'s and ``evaluate``'s ``sample_weight`` (or ``class_weight``);
            logged after ``metrics``, as ``weighted_<name>`` when ``<name>`` is taken (Keras 3's keys).

        Raises
        ------
        ValueError
            For an unknown name, a list of the wrong length, a dict key that is not an output name, a negative
            or non-finite loss weight.
        """
        from . import engine

        self._training = engine.compile_model(self, optimizer, loss, loss_weights=loss_weights, metrics=metrics,
                                              weighted_metrics=weighted_metrics)
        return self

    @property
    def compiled(self) -> bool:
        """True once :meth:`compile` has run."""
        return self._training is not None

    @property
    def training_state(self):
        """What :meth:`compile` built (a :class:`tinynet.engine.KerasState`: optimizer, losses, metrics, epoch
        count, history, shuffling generator), or ``None``; :func:`tinynet.checkpoint.save` saves it."""
        return self._training

    @property
    def optimizer(self):
        """The optimizer of the training loop running now (so that callbacks such as ``ReduceLROnPlateau`` reach
        a :class:`~tinynet.training.Trainer`'s), else the compiled one (``None`` before :meth:`compile`)."""
        engine = self.running_engine if self.running_engine is not None else self._training
        return engine.optimizer if engine is not None else None

    @property
    def loss(self):
        """The compiled losses, one per output (a single loss object for a single-output model)."""
        if self._training is None:
            return None
        return self._training.losses[0] if self._single_output else list(self._training.losses)

    @property
    def metrics(self):
        """The compiled metric objects (resolved on the first :meth:`fit` or :meth:`evaluate`)."""
        return self._training.metric_objects if self._training is not None else []

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
            distributed=None):
        """Train for ``epochs`` epochs (Keras' ``Model.fit``); every argument is checked before the first step.

        Parameters
        ----------
        x : array, list of arrays or dict by input name
        y : array, list of arrays (one per output) or dict by output name
            Class indices or one-hot labels, as the loss takes them; one array serves every output.
        batch_size : int, default 32
        epochs : int, default 1
            The index of the last epoch (training runs epochs ``initial_epoch .. epochs - 1``).
        verbose : {'auto', 0, 1, 2}, default 'auto'
            1 (and 'auto'): a progress bar per epoch; 2: one line per epoch; 0: silent.
        callbacks : list of tinynet.callbacks.Callback, optional
        validation_split : float in [0, 1), default 0
            The fraction of the data, taken from the end before shuffling, held out for validation (with its
            share of ``sample_weight``).
        validation_data : tuple (x_val, y_val) or (x_val, y_val, sample_weight_val), optional
            Overrides ``validation_split``.
        shuffle : bool, default True
            A new random order every epoch.
        class_weight : dict {class index: weight}, optional
            Weights each training example by its class (as Keras: the integer label, or the argmax of a one-hot
            row; classes not listed weigh 1). A single-output model only; keys must be class indices of the
            output, weights finite and >= 0. Not with ``sample_weight``.
        sample_weight : array (N,), optional
            One finite weight >= 0 per training example (a list or a dict gives one array per output). Each
            batch's loss becomes :math:`\\sum_n w_n l_n / B` (Keras' ``'sum_over_batch_size'``, B the batch
            size); ``weighted_metrics`` are weighted, ``metrics`` are not. Per-position weights for outputs with
            middle axes are not supported.
        initial_epoch : int, default 0
            The epoch to start at (to continue a run).
        distributed : bool, tinynet.distributed.Communicator or mpi4py communicator, optional
            Train data-parallel over the processes of an MPI job, ``batch_size`` being the global batch (see
            :mod:`tinynet.distributed`); ``False`` for one process; ``None`` keeps what
            :func:`tinynet.distributed.distribute` set. Sample and class weights are refused there.

        Returns
        -------
        tinynet.callbacks.History
            ``history.history``: per epoch, ``loss``, ``<output>_loss`` for each output with a loss (several
            outputs), the metrics (``accuracy``, ``<output>_accuracy``, ...), their ``val_`` versions, and what
            callbacks add (``learning_rate``).

        Raises
        ------
        ValueError
            An uncompiled model; x and y of different lengths; shapes that do not fit the model's inputs or
            outputs; labels that do not fit the loss (one-hot vs class indices, indices out of range);
            validation_split outside [0, 1); batch_size < 1; epochs < initial_epoch; sample weights of another
            length, negative or not finite; both sample_weight and class_weight; a class_weight key that is not
            a class index; x, validation x or labels holding NaN or inf, or values beyond the dtype of the input
            or output they feed (naming the argument and the first bad index); a dataset object, a generator or
            an (x, y) tuple given as x. Every one of these is raised before any callback runs.
        tinynet.training.TrainingDiverged
            A non-finite loss or gradient, or a step that would make a weight or the optimizer's state non-finite:
            training stops before applying that step, named by its epoch and step (unless a callback such as
            TerminateOnNaN stops it quietly; the weights are then those of the last good step).
        """
        from . import engine

        return engine.fit(self, self._training, x, y, batch_size=batch_size, epochs=epochs, verbose=verbose,
                          callbacks=callbacks, validation_split=validation_split, validation_data=validation_data,
                          shuffle=shuffle, class_weight=class_weight, sample_weight=sample_weight,
                          initial_epoch=initial_epoch, distributed=distributed)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, return_dict=False,
                 callbacks=None):
        """The loss and metrics in inference mode (Keras' ``Model.evaluate``); ``sample_weight`` (N,) weights the
        loss and the weighted metrics as in :meth:`fit`.

        Returns
        -------
        float, list or dict
            ``return_dict``: ``{'loss': ..., '<output>_loss': ..., metrics...}``. Otherwise the values in that
            order: a single float when there is only the loss.
        """
        from . import engine

        return engine.evaluate(self, self._training, x, y, batch_size=batch_size, verbose=verbose,
                               sample_weight=sample_weight, return_dict=return_dict, callbacks=callbacks)

    def train_on_batch(self, x=None, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One optimizer step on the batch ``(x, y)`` (Keras' ``Model.train_on_batch``), its examples weighted by
        ``sample_weight`` or ``class_weight`` as in :meth:`fit`, checked as :meth:`fit` checks its arguments.

        Returns
        -------
        float, list or dict
            This batch's loss and metrics, from the training-mode forward the step differentiated (before the
            update), ordered as :meth:`evaluate` returns them; not running means over earlier calls.

        Raises
        ------
        TrainingDiverged
            On a non-finite loss or gradient, or an update that would make a weight or the optimizer's state
            non-finite; the step then changes nothing (weights, optimizer state and step count).
        """
        from . import engine

        return engine.train_on_batch(self, self._training, x, y, sample_weight=sample_weight,
                                     class_weight=class_weight, return_dict=return_dict)

    def test_on_batch(self, x=None, y=None, sample_weight=None, return_dict=False):
        """The loss and metrics of the batch ``(x, y)`` in inference mode (Keras' ``Model.test_on_batch``):
        :meth:`evaluate` on the whole batch at once (``sample_weight`` as there)."""
        from . import engine

        return engine.test_on_batch(self, self._training, x, y, sample_weight=sample_weight,
                                    return_dict=return_dict)

    def predict_on_batch(self, x):
        """The outputs for the batch ``x`` in inference mode, in one pass (Keras' ``Model.predict_on_batch``):
        :meth:`predict` with the whole batch at once."""
        first = self._input_list(x)[0]
        return self.predict(x, batch_size=max(1, len(first) if np.ndim(first) else 1))  # predict checks x

    def __call__(self, x, training=False):
        """Run on a whole batch without keeping caches (an empty batch gives empty outputs): :meth:`run`, with one
        array, not a list, for a single-output model."""
        return self._unpack_outputs(self.run(x, training=training))

    def first_nonfinite_weight(self, values=True):
        """``(layer name, weight name)`` of the first weight, or gradient, holding NaN or inf; else ``None``.

        Layers in run order, then each layer's weights in Keras order; a weight is reported when its value or
        its gradient (``layer.grads``) is not finite. One pass over every weight and gradient; with
        ``values=False`` over the gradients only (what a training step checks before it updates: the weights
        were checked by the forward pass that produced a finite loss).
        """
        for layer in self.layers:
            for name, w, g in zip(layer.weight_names, layer.weights, layer.grads):
                for array in ((w, g) if values else (g,)):
                    if array is not None and not bool(backend.get_array_module(array).isfinite(array).all()):
                        return layer.name, name
        return None

    # ------------------------------------------------------------------ weights
    @property
    def weights(self):
        return [w for layer in self.layers for w in layer.weights]

    def count_params(self) -> int:
        """Total number of weights, non-trainable ones (BN moving statistics) included, as Keras counts."""
        return sum(layer.count_params() for layer in self.layers)

    def count_trainable_params(self) -> int:
        return sum(int(np.prod(w.shape)) for layer in self.layers for w in layer.trainable_weights)

    def get_weights(self):
        """All weights as NumPy copies, layer by layer in Keras order."""
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, values):
        """Set all weights from a list as returned by :meth:`get_weights`.

        Every layer's values are checked and converted first (shape, real numbers, finite: see
        :meth:`Layer.prepare_weights`); only then is any layer changed, so a bad value anywhere leaves the whole
        model as it was.
        """
        values = weight_list(values, f"Model '{self.name}'")
        expected = sum(len(layer.weights) for layer in self.layers)
        if len(values) != expected:
            raise ValueError(f"Model '{self.name}': set_weights got {len(values)} arrays, expected {expected}")
        plan, i = [], 0
        for layer in self.layers:
            part = values[i:i + len(layer.weights)]
            i += len(layer.weights)
            if part:
                plan.append((layer, layer.prepare_weights(part)))
        for layer, prepared in plan:
            layer.assign_prepared_weights(prepared)

    def save_weights(self, path):
        """Write every weight to an ``.npz`` file, keyed ``'<layer name>/<weight name>'``."""
        from . import saving

        saving.save_weights(self, path)

    def load_weights(self, path):
        """Read weights saved by :meth:`save_weights` (no pickle); every key and shape is checked first."""
        from . import saving

        saving.load_weights(self, path)

    def add_device_listener(self, listener):
        """Have :meth:`to` call ``listener.to(device)`` after moving the weights (an optimizer registers itself
        so its state moves with the model). Adding the same object twice registers it once.

        Parameters
        ----------
        listener : object with a ``to(device)`` method
        """
        if not callable(getattr(listener, "to", None)):
            raise TypeError(f"Model '{self.name}': a device listener needs a to(device) method, got "
                            f"{type(listener).__name__}")
        if not any(known is listener for known in self._device_listeners):
            self._device_listeners.append(listener)

    @property
    def device_listeners(self):
        """The objects :meth:`to` moves with the model (a tuple; see :meth:`add_device_listener`)."""
        return tuple(self._device_listeners)

    def to(self, device):
        """Move weights, gradients (and registered optimizer state) to ``'cpu'`` or ``'gpu'``."""
        if device not in ("cpu", "gpu"):
            raise ValueError(f"Model.to: device must be 'cpu' or 'gpu', got {device!r}")
        if device == "gpu":
            backend.require_gpu()
        for layer in self.layers:
            layer.to(device)
        for listener in self._device_listeners:
            listener.to(device)
        self.device = device
        self.clear_tape()
        return self

    # ------------------------------------------------------------------ description
    def summary(self, line_length=None, print_fn=None):
        """Print a Keras-like table: layer (type), output shape, parameters, multiply-adds, "Connected to" for a
        graph that is not a plain chain; then totals. ``line_length=None`` fits the terminal (80 to 140 columns).

        As Keras' ``Model.summary``: ``print_fn`` (default ``print``) is called with the table, and the method
        returns ``None`` (so a notebook shows the table once); :func:`tinynet.summary.summary_text` returns it.
        """
        from .summary import print_summary

        print_summary(self, line_length=line_length, print_fn=print_fn)

    def count_macs(self) -> int:
        """Multiply-adds for one example (convolutions and dense layers): the sum of
        :meth:`~tinynet.layers.base.Node.count_macs` over every layer call."""
        return sum(node.count_macs() for node in self._nodes)

    @property
    def nodes(self):
        """The layer calls in the order they run."""
        return list(self._nodes)

    def __repr__(self):
        return f"<Model '{self.name}': {len(self.layers)} layers, {self.count_params():,} parameters>"
