"""Homomorphic query kinds, pure protocol in one process (the gRPC legs come later).

JSON lines (``print_json`` receives one JSON string per measurement):

  he_aggregate      100,000 fund-centre identifiers x 1,000,000 agency rows, 6 groups,
                    sum + count + mean. Phases: shuffle-PSI (agency row hashing, which is
                    cacheable per dataset version; agency blinding, which depends on no
                    query input; fund-centre request; agency response; fund-centre
                    selection), BFV encryption, fund-centre selection + sum, agency
                    decryption + noise, fund-centre unmasking. By default the PSI runs
                    with the full 100k on the fund-centre side against a 100k-row sample of
                    the agency (rows-proportional phases scaled x10: "extrapolated": true)
                    and the HE phases run at full size on the ground-truth selection;
                    ``full=True`` runs the PSI on all 1M rows too.
  he_threshold      1,000 applicants against 1,000,000 rows: the agency's per-epoch
                    preparation (1M Paillier encryptions, measured on 50k and scaled x20,
                    "extrapolated": true) apart from the online part (fund-centre blinding
                    of a 1,024-entry padded batch, agency sign decryption, decision).

Every heavy step goes through a process pool of ``os.cpu_count()`` workers via the
protocols' ``mapper`` argument, as the node would run it. Results are checked against
the plain computation (aggregates within the DP noise's 2^-64 tail bound).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction

import numpy as np
import phe

from protocols import he_aggregate as ha
from protocols import psi_shuffle as ps
from protocols import threshold as th

DISTRICTS = ("天宁区", "钟楼区", "新北区", "武进区", "金坛区", "溧阳市")
AGG_TARGET_S, THRESHOLD_TARGET_S = 60.0, 20.0


def _ids(prefix: str, n: int) -> list[bytes]:
    return [f"{prefix}{i:012d}".encode() for i in range(n)]


class _Clock:
    """Wall seconds per phase, and CPU seconds of this process plus the pool's workers
    (from /proc), so a run on a shared machine can be told apart from a slow one."""

    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self._pool, self._tick = pool, os.sysconf("SC_CLK_TCK")
        self.cpu: dict[str, float] = {}

    def _cpu(self) -> float:
        total = sum(os.times()[:2])
        for pid in list(getattr(self._pool, "_processes", {}) or {}):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / self._tick
            except (OSError, IndexError, ValueError):
                pass
        return total

    def __call__(self, name: str, fn, *args, **kw):
        c0, t0 = self._cpu(), time.perf_counter()
        out = fn(*args, **kw)
        wall = time.perf_counter() - t0
        self.cpu[name] = self._cpu() - c0
        return out, wall


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _aggregate(emit, pool, *, rows: int, asked: int, overlap: float, full: bool) -> None:
    rng = random.Random(20250601)
    agency_ids = _ids("320402", rows)
    values = [rng.randrange(250_000, 4_000_001) for _ in range(rows)]  # contribution base, fen
    groups = [rng.randrange(len(DISTRICTS)) for _ in range(rows)]
    members = rng.sample(range(rows), int(asked * overlap))
    fc_ids = [agency_ids[i] for i in members] + _ids("990000", asked - len(members))
    workers, mapper, timed = pool._max_workers, pool.map, _Clock(pool)
    load_start = _load()

    # --- shuffle-PSI ----------------------------------------------------------------
    psi_rows = rows if full else min(rows, asked)
    scale = rows / psi_rows
    hashed, t_hash = timed("agency_hash_rows_s", ps.hash_identifiers, agency_ids[:psi_rows],
                           mapper, 4096)
    agency = ps.AgencyShuffler(hashed, mapper=mapper, chunk=4096)
    _, t_prepare = timed("agency_blind_rows_s", agency.prepare)
    fc = ps.FundCentreMatcher(fc_ids, mapper=mapper, chunk=4096)
    request, t_request = timed("fund_centre_request_s",
                               lambda: ps.ShuffleRequest.from_bytes(fc.request().to_bytes()))
    response, t_respond = timed("agency_respond_s", lambda: ps.ShuffleResponse.from_bytes(
        agency.respond(request).to_bytes()))
    selection, t_select = timed("fund_centre_select_s", fc.select, response)
    in_sample = sum(1 for i in members if i < psi_rows)
    assert selection.count == in_sample, "PSI selection differs from the plain intersection"
    counts = ps.scalar_mult_counts(asked, rows)
    for name in ("agency_hash_rows_s", "agency_blind_rows_s"):
        timed.cpu[name] *= scale
    psi = {"agency_hash_rows_s": t_hash * scale, "agency_blind_rows_s": t_prepare * scale,
           "fund_centre_request_s": t_request, "agency_respond_s": t_respond,
           "fund_centre_select_s": t_select}  # the select's 1M-row lookups are a small part
    emit(bench="he_aggregate", phase="shuffle_psi", rows=rows, asked=asked,
         measured_rows=psi_rows, extrapolated=not full, workers=workers,
         scalar_mults=counts, request_bytes=len(request.to_bytes()),
         response_bytes=len(request.blinded) + 32 * rows,
         **{k: round(v, 2) for k, v in psi.items()},
         cpu_s={k: round(timed.cpu[k], 1) for k in psi})

    # --- BFV aggregate at full size, on the ground-truth selection -------------------
    permutation = ps.random_permutation(rows)
    member_mask = np.zeros(rows, dtype=bool)
    member_mask[members] = True
    bits = member_mask[permutation]
    aggregator, t_setup = timed("agency_keygen_s", ha.AgencyAggregator, values, groups, DISTRICTS, permutation,
                                 value_bound=4_000_000, mapper=mapper)
    columns, t_encrypt = timed("agency_encrypt_s", aggregator.offer)
    fc_agg = ha.FundCentreAggregator(bits, count_epsilon=1, mapper=mapper)
    masked, t_evaluate = timed("fund_centre_select_sum_s", fc_agg.evaluate, columns)
    budget = ha.EpsilonBudget("fund-centre", "flexible_workers", "2025-06", 4)
    release, t_release = timed("agency_decrypt_noise_s", aggregator.release, masked, budget=budget, epsilon_count="0.5",
                                epsilon_sum="0.5", min_group_size=10)
    result, t_result = timed("fund_centre_unmask_s", fc_agg.result, release)
    count_tail = ha.DiscreteLaplace(1, Fraction(1, 2)).tail_bound()
    sum_tail = ha.DiscreteLaplace(4_000_000, Fraction(1, 2)).tail_bound()
    worst_count = worst_sum = 0
    for g, name in enumerate(DISTRICTS):
        sel = [values[i] for i in members if groups[i] == g]
        worst_count = max(worst_count, abs(result[name].count - len(sel)))
        worst_sum = max(worst_sum, abs(result[name].total - sum(sel)))
    assert worst_count <= count_tail and worst_sum <= sum_tail, "aggregate outside DP bounds"
    he = {"agency_keygen_s": t_setup, "agency_encrypt_s": t_encrypt,
          "fund_centre_select_sum_s": t_evaluate, "agency_decrypt_noise_s": t_release,
          "fund_centre_unmask_s": t_result}
    emit(bench="he_aggregate", phase="bfv", rows=rows, groups=len(DISTRICTS),
         ciphertexts=len(columns.ciphertexts), limbs=aggregator.limbs,
         columns_mb=round(sum(map(len, columns.ciphertexts)) / 2**20, 1),
         masked_mb=round(sum(map(len, masked.ciphertexts)) / 2**20, 1), workers=workers,
         extrapolated=False, max_count_noise=worst_count, max_sum_noise=worst_sum,
         **{k: round(v, 2) for k, v in he.items()},
         cpu_s={k: round(timed.cpu[k], 1) for k in he})
    online = (psi["fund_centre_request_s"] + psi["agency_respond_s"]
              + psi["fund_centre_select_s"] + t_evaluate + t_release + t_result)
    total = sum(psi.values()) + sum(he.values())
    cpu = sum(timed.cpu.values()) - timed.cpu["agency_hash_rows_s"]
    emit(bench="he_aggregate", phase="summary", rows=rows, asked=asked,
         end_to_end_s=round(total, 1),
         end_to_end_without_cached_hashes_s=round(total - psi["agency_hash_rows_s"], 1),
         online_s=round(online, 1), target_s=AGG_TARGET_S,
         meets_target=total - psi["agency_hash_rows_s"] < AGG_TARGET_S,
         cpu_s_without_cached_hashes=round(cpu, 1),
         idle_machine_estimate_s=round(cpu / workers, 1),
         loadavg_start=load_start, loadavg_end=_load(),
         extrapolated=not full, workers=workers,
         note="online = after the agency's query-independent blinding and encryption; "
              "H(y) is cached per dataset version; idle estimate = CPU seconds / workers")


def _threshold(emit, pool, *, rows: int, applicants: int, sample: int) -> None:
    rng = random.Random(7)
    workers, mapper, timed = pool._max_workers, pool.map, _Clock(pool)
    load_start = _load()
    (pk, sk), t_keygen = timed("keygen", phe.generate_paillier_keypair, n_length=3072)
    incomes = [rng.randrange(150_000, 5_000_001) for _ in range(sample)]  # monthly, fen
    packed, t_prep = timed("prepare", th.prepare_incomes, sk, incomes, mapper=mapper, chunk=2048)
    emit(bench="he_threshold", phase="per_epoch_preparation", rows=rows, measured_rows=sample,
         extrapolated=sample < rows, workers=workers, keygen_3072_s=round(t_keygen, 2),
         encrypt_s=round(t_prep * rows / sample, 1),
         encrypt_cpu_s=round(timed.cpu["prepare"] * rows / sample, 1),
         per_encryption_ms=round(timed.cpu["prepare"] / sample * 1e3, 3),
         phe_default_per_encryption_ms=round(_phe_default_ms(pk), 1),
         speedup_vs_phe=round(_phe_default_ms(pk) / (timed.cpu["prepare"] / sample * 1e3)),
         published_mb=round(rows * th._width(pk.n) / 2**20, 1))
    cs = th.unpack_ciphertexts(packed, pk.n)
    picked = rng.sample(range(sample), applicants)
    thresholds = [rng.randrange(300_000, 1_500_001) for _ in picked]
    fc = th.FundCentreThreshold(pk.n, [(cs[i], t) for i, t in zip(picked, thresholds)],
                                mapper=mapper, chunk=32)
    request, t_request = timed("blind", lambda: th.ThresholdRequest.from_bytes(
        fc.request().to_bytes()))
    agency = th.AgencyThreshold(sk, mapper=mapper, chunk=32)
    response, t_respond = timed("signs", lambda: th.ThresholdResponse.from_bytes(
        agency.respond(request).to_bytes()))
    answers, t_decide = timed("decide", fc.decide, response)
    assert answers == [incomes[i] >= t for i, t in zip(picked, thresholds)], "threshold wrong"
    online = t_request + t_respond + t_decide
    emit(bench="he_threshold", phase="online", applicants=applicants,
         batch=response.count, rows=rows, workers=workers, extrapolated=False,
         fund_centre_blind_s=round(t_request, 2), agency_signs_s=round(t_respond, 2),
         fund_centre_decide_s=round(t_decide, 3), online_s=round(online, 1),
         request_bytes=len(request.to_bytes()), response_bytes=len(response.to_bytes()),
         cpu_s=round(timed.cpu["blind"] + timed.cpu["signs"] + timed.cpu["decide"], 1),
         idle_machine_estimate_s=round(
             (timed.cpu["blind"] + timed.cpu["signs"] + timed.cpu["decide"]) / workers, 1),
         loadavg_start=load_start, loadavg_end=_load(),
         target_s=THRESHOLD_TARGET_S, meets_target=online < THRESHOLD_TARGET_S)


def _phe_default_ms(pk, n: int = 5) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        pk.encrypt(i)
    return (time.perf_counter() - t0) / n * 1e3


def _warm_up(_: int) -> int:
    """Imports and first calls in a worker, outside any timed phase."""
    ps.multiply_batch(ps.group.random_scalar(), ps.hash_batch([b"warm-up"]))
    th.blind_task(35, [(2, 3, 1)])
    return len(ha.encrypt_task.__name__)


def run(print_json=print, *, quick: bool = False, full: bool = False) -> None:
    """Run both benchmarks; ``quick`` uses 1/10 of the sizes to check that they run."""
    def emit(**fields) -> None:
        print_json(json.dumps(fields, ensure_ascii=False))

    div = 10 if quick else 1
    cores = os.cpu_count() or 1
    with ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_warm_up, range(4 * cores)))
        _aggregate(emit, pool, rows=1_000_000 // div, asked=100_000 // div, overlap=0.6,
                   full=full)
        _threshold(emit, pool, rows=1_000_000 // div, applicants=1_000 // div,
                   sample=50_000 // div)


if __name__ == "__main__":
    run(full=os.environ.get("SHUQIAO_BENCH_FULL") == "1")
