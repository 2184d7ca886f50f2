"""The what-if fast path: the engine model with every decoding request folded into one group.

Between admissions and finishes, all decoding requests advance one token per step together. So a global step
counter ``g`` stands in for each decoder's progress: decoder i has ``c0[i] + g`` computed tokens and finishes
when ``g == fin[i]``; the decode context sum is ``sum(c0) + batch * g``; a decoder needs a new KV block in the
step where ``(c0[i] + g) % block_size == 0``, counted by a histogram of ``c0 % block_size``. Steps with
prefill chunks are run one by one (only their chunks cost work); pure-decode stretches are jumped in closed
form up to the next finish. A step where a block runs out replays ``Engine.schedule``'s walk over the
running requests in admission order (:func:`_preempt`): the last admitted are preempted, leave the group
and go back to the head of the queue with their produced tokens, to be recomputed when readmitted; nothing
is admitted in that step. Whatever the group cannot express — an odd starting state, a batch larger than
the token budget — hands the state over to the exact ``Engine`` (``None`` from ``simulate`` = use the exact
path from the start). Same results as ``Engine`` up to float rounding (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from heapq import heapify, heappop, heappush

from blockctl.engine.core import Engine
from blockctl.engine.steptime import StepTimeModel
from blockctl.engine.types import EngineConfig, Phase, Prediction, Request


@dataclass(frozen=True, slots=True)
class Columns:
    """An instance's state as the group's columns (running, then waiting; index = request), built once and
    shared by the what-ifs of any number of new requests (:func:`forecast` copies what it mutates)."""

    cfg: EngineConfig
    model: StepTimeModel
    prompt: list[int]
    produced: list[int]
    out: list[int]  # total output each runs to (a prediction already overrun: one more token)
    c0: list[int]  # decoders: computed tokens minus g
    fin: list[int]  # decoders: the g at which they finish
    heap: list[tuple[int, int]]  # (fin, index) of the decoders, a heap
    hist: list[int]  # decoders by c0 % block_size
    sumc0: int  # sum of the decoders' c0
    batch: int  # running[:batch] decode; at most the last running request is still in its prefill
    pre: int  # the running request in the middle of its prefill (always the last admitted), or -1
    pre_c: int
    used: int  # KV blocks held
    n_run: int
    longest: int  # most prompt + output tokens of one request
    hits: list[int]  # waiting requests' prefix-cache hits at first admission (index - n_run)
    counts: tuple[int, int]  # (running, waiting) as given, for the Prediction (before any overflow moved)


def columns(
    cfg: EngineConfig, model: StepTimeModel, running: Sequence[Request], waiting: Sequence[Request]
) -> Columns | None:
    """The state's columns; None when the group cannot express it (the exact engine must answer)."""
    bs, budget, max_seqs = cfg.block_size, cfg.max_num_batched_tokens, cfg.max_num_seqs
    if max_seqs > budget:
        return None
    counts = (len(running), len(waiting))
    running, waiting = _overflow(cfg, running, waiting)
    n_run = len(running)
    # One pass per queue (this runs for every instance state in the simulator, so it is kept flat).
    prompt: list[int] = []
    produced: list[int] = []
    out: list[int] = []
    c0: list[int] = []
    fin: list[int] = []
    hist = [0] * bs
    batch = used = sumc0 = longest = 0
    pre = -1
    pre_c = 0
    for r in running:
        p, o, c, t = r.prompt_tokens, r.num_output_tokens, r.num_computed_tokens, r.output_tokens
        if t <= o:
            t = o + 1  # a prediction already overrun: one more token
        prompt.append(p)
        produced.append(o)
        out.append(t)
        if p + t > longest:
            longest = p + t
        if pre < 0 and o > 0 and c == p + o - 1:  # decoding (decoders come first, in admission order)
            c0.append(c)
            fin.append(t - o)
            hist[c % bs] += 1
            sumc0 += c
            used += -(-c // bs)
            batch += 1
        elif pre < 0 and batch == n_run - 1 and o >= 0 and 0 <= c < p + o:  # the last admitted, prefilling
            pre, pre_c = batch, c
            c0.append(0)
            fin.append(0)
            used += -(-c // bs)
        else:
            return None
    for r in waiting:
        p, o, t = r.prompt_tokens, r.num_output_tokens, r.output_tokens
        if o < 0:
            o = 0
        if t <= o:
            t = o + 1
        prompt.append(p)
        produced.append(o)
        out.append(t)
        if p + t > longest:
            longest = p + t
    if min(prompt, default=1) < 1 or used > cfg.num_gpu_blocks:
        return None
    heap = list(zip(fin[:batch], range(batch), strict=True))
    heapify(heap)
    n_wait = len(waiting)
    fin += [0] * n_wait
    c0 += [0] * n_wait
    return Columns(cfg, model, prompt, produced, out, c0, fin, heap, hist, sumc0, batch, pre, pre_c, used,
                   n_run, longest, [r.prefix_hit for r in waiting], counts)


def _overflow(
    cfg: EngineConfig, running: Sequence[Request], waiting: Sequence[Request]
) -> tuple[Sequence[Request], Sequence[Request]]:
    """The state as ``Engine.restore`` rebuilds it: running requests, in admission order, that find no seat
    or no KV blocks left (an agent's view can hold more than the engine, which preempted what the agent
    could not see) are restored as preempted, their computed tokens dropped, ahead of the waiting queue."""
    bs, free, seats = cfg.block_size, cfg.num_gpu_blocks, cfg.max_num_seqs
    fit: list[Request] = []
    moved: list[Request] = []
    for r in running:
        need = -(-r.num_computed_tokens // bs)
        if len(fit) < seats and need <= free:
            free -= need
            fit.append(r)
        else:
            moved.append(r)
    if not moved:
        return running, waiting
    dropped = [Request(r.req_id, r.prompt_tokens, r.output_tokens, num_output_tokens=r.num_output_tokens,
                       prefix_hit=r.prefix_hit) for r in moved]
    return fit, [*dropped, *waiting]


def simulate(
    cfg: EngineConfig,
    model: StepTimeModel,
    running: Sequence[Request],
    waiting: Sequence[Request],
    new: Request,
) -> Prediction | None:
    """``whatif.predict`` by the decode group; None when the exact engine must answer instead."""
    cols = columns(cfg, model, running, waiting)
    return None if cols is None else forecast(cols, new)


def forecast(cols: Columns, new: Request, extra_blocks: int = 0) -> Prediction | None:
    """``simulate`` for the state of ``cols`` and the request ``new``; ``cols`` is left as it was.
    ``extra_blocks``: free blocks beyond what the state leaves (see ``whatif.Forecaster.predict``)."""
    cfg, model = cols.cfg, cols.model
    bs, budget, max_seqs = cfg.block_size, cfg.max_num_batched_tokens, cfg.max_num_seqs
    total_blocks = cfg.num_gpu_blocks
    if new.output_tokens < 1 or new.prompt_tokens < 1:
        return None
    longest = max(cols.longest, new.prompt_tokens + new.output_tokens)
    if longest > cfg.max_model_len or -(-(longest - 1) // bs) > total_blocks:
        return None
    prompt = [*cols.prompt, new.prompt_tokens]
    produced = [*cols.produced, 0]
    out = [*cols.out, new.output_tokens]
    c0 = [*cols.c0, 0]
    fin = [*cols.fin, 0]
    hits = [*cols.hits, new.prefix_hit]
    heap = cols.heap.copy()
    hist = cols.hist.copy()
    batch, pre, pre_c, used, n_run, sumc0 = cols.batch, cols.pre, cols.pre_c, cols.used, cols.n_run, cols.sumc0
    n_running_given, n_waiting = cols.counts  # what the Prediction reports
    target = len(prompt) - 1
    order = list(range(n_run))  # running requests in admission order (finished ones skipped on hand-over)
    wi = n_run  # head of the waiting queue
    front: list[int] = []  # preempted requests, queued ahead of wi (admission order)
    free = total_blocks - used + extra_blocks
    g = 0
    now = 0.0
    t_sched = t_first = -1.0
    overhead = model.overhead_ms
    gpu_ms_raw = model.gpu_ms_raw
    dec_a, dec_b = model.decode_table(len(prompt))  # a pure-decode step of n sequences: dec_a[n] + dec_b * ctx
    while True:
        if wi > target and pre < 0 and not front and fin[target] > 0:
            # The target decodes and nobody waits: only finishes remain, visited in order with the blocks
            # counted per stretch, without the admission bookkeeping below, until the target finishes or a
            # block would run out before the next finish (the loop below then preempts).
            safe = False  # once the blocks cannot run out before the target's finish, they are not counted
            while True:
                f = heap[0][0]
                while fin[heap[0][1]] != f:
                    heappop(heap)  # a stale entry: preempted since
                    f = heap[0][0]
                k = f - g
                if not safe:
                    if batch * -(-(fin[target] - g) // bs) <= free:
                        safe = True
                    else:
                        if k < bs:  # _blocks_over for a stretch shorter than a block (the common case), inlined
                            m = -g % bs
                            need = 0
                            for j in range(m, m - k, -1):
                                need += hist[j]  # hist[-1] is hist[bs - 1]: indices wrap as residues do
                        else:
                            need = _blocks_over(hist, batch, g, k, bs)
                        if need > free:
                            break
                        free -= need
                now += (k * (dec_a[batch] + dec_b * (sumc0 + batch * g)) + dec_b * batch * k * (k - 1) * 0.5) * 1e-3
                g = f
                while heap and heap[0][0] == g:
                    i = heappop(heap)[1]
                    if fin[i] != g:
                        continue
                    if i == target:
                        return Prediction(ttft_s=t_first, e2e_s=now, queue_s=t_sched, running=n_running_given,
                                          waiting=n_waiting, kv_free_blocks=total_blocks - used)
                    ci = c0[i]
                    batch -= 1
                    sumc0 -= ci
                    fin[i] = -1
                    if not safe:
                        free += -(-(ci + g) // bs)
                        hist[ci % bs] -= 1
        need = hist[-g % bs] if batch else 0
        admit = True
        if need > free or (pre >= 0 and need + _chunk_blocks(prompt[pre] + produced[pre] - pre_c, pre_c,
                                                             budget - batch, bs) > free):
            # A block runs out: preempt as Engine.schedule would; nothing is admitted in this step.
            free, batch, sumc0, pre, pre_c = _preempt(order, front, fin, c0, produced, prompt, out, hist,
                                                      g, free, batch, sumc0, pre, pre_c, budget, bs)
            admit = False
            need = hist[-g % bs] if batch else 0
        free1 = free - need
        bud = budget - batch
        chunks: list[tuple[int, int, int]] = []
        pt = ps = cached = db = dc = 0
        attn = 0.0
        if pre >= 0:
            n = min(prompt[pre] + produced[pre] - pre_c, bud)
            nb = -(-(pre_c + n) // bs) + (pre_c // -bs)
            free1 -= nb
            bud -= n
            chunks.append((pre, n, pre_c))
            if n == 1 and produced[pre] and pre_c == prompt[pre] + produced[pre] - 1:
                db, dc = 1, pre_c  # the last token of a recompute costs what a decode does (as in Engine)
            else:
                pt, ps, cached, attn = n, 1, pre_c, n * (pre_c + (n + 1) * 0.5)
        n_running = batch + (1 if pre >= 0 else 0)
        while admit and (front or wi <= target) and bud > 0 and n_running < max_seqs:
            j = front[0] if front else wi
            total = prompt[j] + produced[j]
            # A prefix hit counts at a request's first admission only (as in Engine): not after a preemption.
            h = 0 if front else min(hits[j - n_run], total - 1)
            n = min(total - h, bud)
            nb = -(-(h + n) // bs)
            if nb > free1:
                break
            free1 -= nb
            bud -= n
            chunks.append((j, n, h))
            order.append(j)
            if j == target and t_sched < 0:
                t_sched = now
            if front:
                del front[0]
            else:
                wi += 1
            n_running += 1
            pt += n
            ps += 1
            cached += h
            attn += n * (h + (n + 1) * 0.5)
        if chunks:
            ctx = sumc0 + batch * g
            now += (gpu_ms_raw(pt, ps, attn, cached, batch + db, ctx + dc) + overhead) * 1e-3
            free = free1
            g += 1
            pre = -1
        elif not admit:  # the preemption step itself: one decode step (or an empty one) of the survivors
            now += (dec_a[batch] + dec_b * (sumc0 + batch * g)) * 1e-3
            free = free1
            g += 1
        else:
            while heap and fin[heap[0][1]] != heap[0][0]:
                heappop(heap)  # stale entries of preempted requests
            if not heap:
                break  # nothing runs and nothing can be admitted: let the exact engine sort it out
            k = heap[0][0] - g  # a decode-only stretch lasts until the next finish ...
            if batch * -(-k // bs) > free:  # ... or until the blocks run out
                k = _steps_affordable(hist, batch, g, k, free, bs)
            ctx = sumc0 + batch * g
            now += (k * (dec_a[batch] + dec_b * ctx) + dec_b * batch * k * (k - 1) * 0.5) * 1e-3
            free -= _blocks_over(hist, batch, g, k, bs)
            g += k
        while heap and heap[0][0] == g:
            i = heappop(heap)[1]
            if fin[i] != g:
                continue  # a stale entry: preempted since
            ci = c0[i]
            free += -(-(ci + g) // bs)
            batch -= 1
            sumc0 -= ci
            hist[ci % bs] -= 1
            fin[i] = -1
            if i == target:
                return Prediction(ttft_s=t_first, e2e_s=now, queue_s=t_sched, running=n_running_given,
                                  waiting=n_waiting, kv_free_blocks=total_blocks - used)
        for i, n, cb in chunks:
            ca = cb + n
            if ca < prompt[i] + produced[i]:
                pre, pre_c = i, ca
                continue
            produced[i] += 1
            if i == target and t_first < 0:
                t_first = now
            if produced[i] >= out[i]:
                free += -(-ca // bs)
                fin[i] = -1
                if i == target:
                    return Prediction(ttft_s=t_first, e2e_s=now, queue_s=t_sched, running=n_running_given,
                                      waiting=n_waiting, kv_free_blocks=total_blocks - used)
                continue
            ci = ca - g
            c0[i] = ci
            fin[i] = f = g + out[i] - produced[i]
            heappush(heap, (f, i))
            hist[ci % bs] += 1
            sumc0 += ci
            batch += 1
    # Hand-over: rebuild the state as Requests and let the exact engine go on from here.
    eng = Engine(cfg.grown(extra_blocks), model, now=now)
    reqs = [Request(req_id=str(i), prompt_tokens=prompt[i], output_tokens=out[i]) for i in range(len(prompt))]
    for i in order:
        if fin[i] < 0:
            continue
        r = reqs[i]
        if i == pre:
            r.num_computed_tokens, r.num_output_tokens = pre_c, produced[i]
        else:
            r.num_computed_tokens, r.num_output_tokens = c0[i] + g, out[i] - (fin[i] - g)
        r.phase = Phase.RUNNING
        eng.restore(r)
    for i in front:
        reqs[i].num_output_tokens = produced[i]
        reqs[i].num_preemptions = 1  # no prefix hit at readmission (Engine counts hits at first admission)
        eng.restore(reqs[i])
    for i in range(wi, target + 1):
        reqs[i].num_output_tokens = produced[i]
        reqs[i].prefix_hit = hits[i - n_run]
        eng.restore(reqs[i])
    tgt = reqs[target]
    tgt.first_scheduled_time = t_sched if t_sched >= 0 else None
    tgt.first_token_time = t_first if t_first >= 0 else None
    eng.run_until_finished(tgt)
    assert tgt.finish_time is not None and tgt.first_token_time is not None
    return Prediction(
        ttft_s=tgt.first_token_time, e2e_s=tgt.finish_time,
        queue_s=tgt.first_scheduled_time if tgt.first_scheduled_time is not None else 0.0,
        running=n_running_given, waiting=n_waiting, kv_free_blocks=total_blocks - used,
    )


def _chunk_blocks(remaining: int, computed: int, budget: int, bs: int) -> int:
    """New blocks a running request with ``remaining`` tokens to compute takes in a step (as Engine.schedule)."""
    n = min(remaining, budget)
    return -(-(computed + n) // bs) + (computed // -bs)


def _preempt(
    order: list[int], front: list[int], fin: list[int], c0: list[int], produced: list[int], prompt: list[int],
    out: list[int], hist: list[int], g: int, free: int, batch: int, sumc0: int, pre: int, pre_c: int,
    budget: int, bs: int,
) -> tuple[int, int, int, int, int]:
    """``Engine.schedule``'s walk over the running requests when a block runs out, in closed form.

    The walk schedules the running requests in admission order, each taking its new blocks; when none are
    left it preempts the last admitted until the current one fits, or until it is preempted itself. Since
    needs are never negative, its victims are exactly the shortest suffix (in admission order) whose removal
    frees enough: the survivors' new blocks ≤ free + the victims' held blocks. So victims are popped from the
    end of ``order`` until that holds. They leave the group (blocks freed, produced tokens kept) and go to
    the head of the queue, earliest admitted first. Returns the new (free, batch, sumc0, pre, pre_c)."""
    nb_pre = 0
    if pre >= 0:  # the prefilling request is the last admitted; it gets the budget the decoders leave
        nb_pre = _chunk_blocks(prompt[pre] + produced[pre] - pre_c, pre_c, budget - batch, bs)
    need = (hist[-g % bs] if batch else 0) + nb_pre
    victims: list[int] = []
    while need > free:
        v = order.pop()
        if fin[v] < 0:
            continue  # finished earlier: no longer running
        victims.append(v)
        if v == pre:
            need -= nb_pre
            free += -(-pre_c // bs)
            pre, pre_c = -1, 0
            continue
        cv = c0[v]
        c = cv + g
        need -= c % bs == 0
        free += -(-c // bs)
        produced[v] = out[v] - (fin[v] - g)
        fin[v] = 0
        batch -= 1
        sumc0 -= cv
        hist[cv % bs] -= 1
    front[:0] = victims[::-1]
    return free, batch, sumc0, pre, pre_c


def _blocks_over(hist: list[int], batch: int, g: int, k: int, bs: int) -> int:
    """New blocks the decode group takes in steps g .. g+k-1 (step g+s takes ``hist[-(g+s) % bs]``)."""
    q, r = divmod(k, bs)
    if not r:
        return q * batch
    m = -g % bs  # steps g .. g+r-1 read hist[m], hist[m-1], ..., hist[m-r+1] (indices mod bs)
    lo = m - r + 1
    if lo >= 0:
        return q * batch + sum(hist[lo : m + 1])
    return q * batch + sum(hist[: m + 1]) + sum(hist[lo + bs :])


def _steps_affordable(hist: list[int], batch: int, g: int, k: int, free: int, bs: int) -> int:
    """Largest j <= k whose decode steps fit in ``free`` blocks (>= 1: the caller checked step g fits)."""
    if _blocks_over(hist, batch, g, k, bs) <= free:
        return k
    q = free // batch if batch else k
    j = q * bs
    left = free - q * batch
    while j < k:
        need = hist[-(g + j) % bs]
        if need > left:
            break
        left -= need
        j += 1
    return j
