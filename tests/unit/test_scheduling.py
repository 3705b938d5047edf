"""The scheduling rule (services/jobs/scheduling.py): affinity and fairness, case by case and on a model farm
(tests/scheduling_sim.py). The real farm's numbers come from bench/checkpoints.py."""
from services.jobs.scheduling import Line, Replica, choose_line
from tests import scheduling_sim as sim

T, L = 0.5, 3.0
MAX_WAIT, TICK = 30.0, 0.5


def replica(name, serving=None, in_flight=0, can_load=None):
    return Replica(name, serving, in_flight, frozenset(can_load) if can_load is not None else None, T, L)


def choose(me, others=(), lines=()):
    return choose_line(me, others, lines, MAX_WAIT, TICK)


# ---- affinity

def test_a_replica_stays_on_its_line_while_jobs_wait_in_it():
    decision = choose(replica("r0", "a", in_flight=2), [replica("r1", "b")],
                      [Line("a", 3, 1.0), Line("b", 40, 5.0), Line("c", 20, 5.0)])
    assert (decision.serve, decision.reason) == ("a", "stay")


def test_a_new_replica_takes_the_line_with_most_waiting_jobs_per_replica():
    decision = choose(replica("r2"), [replica("r0", "a"), replica("r1", "a")],
                      [Line("a", 50, 1.0), Line("b", 30, 1.0)])
    assert (decision.serve, decision.reason) == ("b", "start")     # a: 50 / 3 replicas, b: 30 / 1


def test_a_new_replica_does_not_pile_onto_a_short_line_others_serve():
    served = [replica("r0", "a")]
    assert choose(replica("r1"), served, [Line("a", 2, 0.1)]).serve is None      # asks again later
    assert choose(replica("r1"), served, [Line("a", 2, 0.1), Line("b", 1, 0.0)]).serve == "b"
    assert choose(replica("r1"), served, [Line("a", 40, 0.1), Line("b", 1, 0.0)]).serve == "a"


def test_a_replica_whose_line_ran_dry_moves_only_for_work_that_pays_for_a_load():
    lonely = [replica("r1", "b")]
    small = choose(replica("r0", "a"), lonely, [Line("b", 12, 2.0)])     # 12 / 2 × T = 3 s < 1.5 L
    assert (small.serve, small.reason) == ("a", "idle")                 # keeps its model for its next job
    large = choose(replica("r0", "a"), lonely, [Line("b", 20, 2.0)])     # 20 / 2 × T = 5 s ≥ 1.5 L
    assert (large.serve, large.reason) == ("b", "dry")


def test_a_replica_sharing_its_line_moves_to_a_much_longer_one():
    others = [replica("r1", "a"), replica("r2", "b")]
    decision = choose(replica("r0", "a"), others, [Line("a", 4, 1.0), Line("b", 60, 1.0)])
    assert (decision.serve, decision.reason) == ("b", "longer")
    alone = choose(replica("r0", "a"), [replica("r2", "b")], [Line("a", 4, 1.0), Line("b", 60, 1.0)])
    assert alone.serve == "a"       # alone on its line: stays until it runs dry


def test_a_replica_is_only_sent_to_checkpoints_it_can_load():
    decision = choose(replica("r0", can_load={"a"}), [], [Line("b", 100, 50.0), Line("a", 1, 0.0)])
    assert decision.serve == "a"
    assert choose(replica("r0", can_load={"a"}), [], [Line("b", 100, 50.0)]).serve is None
    rescue = choose(replica("r0", "a", can_load={"a"}), [replica("r1", "a", can_load={"a", "b"})],
                    [Line("b", 1, MAX_WAIT)])
    assert rescue.serve == "a"     # r1 can take b


def test_a_line_no_replica_can_load_is_still_rescued_so_that_its_jobs_end():
    # its jobs fail on the replica with a readable reason instead of waiting for ever
    lines = [Line("missing", 2, 0.5)]      # at once: waiting would not help
    decision = choose(replica("r0", "a", can_load={"a"}), [replica("r1", "a", can_load={"a"})], lines)
    assert (decision.serve, decision.reason) == ("missing", "rescue")
    assert choose(replica("r0", "a", can_load={"a"}), [replica("r1", "b", can_load={"missing"})],
                  [Line("missing", 2, 0.5)]).serve == "a"      # r1 can load it: an ordinary line


# ---- fairness

def test_a_line_nobody_serves_gets_a_replica_in_time_for_its_last_job():
    others = [replica("r1", "a")]
    lines = [Line("a", 50, 10.0), Line("rare", 5, 0.0)]
    # the rare line's last job would start after oldest wait + L + 4 T + lead (one tick, 1 job in hand)
    due_at = MAX_WAIT - (L + 4 * T + TICK + 1 * T)
    early = choose(replica("r0", "a", in_flight=1), others, [lines[0], Line("rare", 5, due_at - 0.1)])
    assert early.serve == "a"
    due = choose(replica("r0", "a", in_flight=1), others, [lines[0], Line("rare", 5, due_at)])
    assert (due.serve, due.reason) == ("rare", "rescue")


def test_a_rescue_never_takes_a_replica_alone_on_a_line_with_work():
    lines = [Line("a", 50, 10.0), Line("rare", 1, MAX_WAIT)]
    assert choose(replica("r0", "a"), [replica("r1", "b")], lines).serve == "a"
    # its line dry, it can be spared
    assert choose(replica("r0", "a"), [], [Line("rare", 1, MAX_WAIT)]).reason == "rescue"


def test_a_rescued_line_keeps_its_replica_until_it_runs_dry():
    # the rescuer is alone on the rare line: a much longer line does not pull it back
    decision = choose(replica("r0", "rare", in_flight=1), [replica("r1", "a")],
                      [Line("rare", 3, 29.0), Line("a", 90, 29.0)])
    assert decision.serve == "rare"


def test_an_unmeasured_farm_assumes_default_times():
    unmeasured = Replica("r0", "a")
    # defaults T 1 s and L 5 s: 20 waiting jobs / 2 replicas × 1 s ≥ 1.5 × 5 s
    assert choose_line(unmeasured, [Replica("r1", "b")], [Line("b", 20, 1.0)], MAX_WAIT, TICK).serve == "b"
    assert choose_line(unmeasured, [Replica("r1", "b")], [Line("b", 14, 1.0)], MAX_WAIT, TICK).serve == "a"


# ---- the model farm: the workload (R = 4, K = 4, T = 0.5 s, L = 3 s, 400 jobs)

def test_on_a_burst_the_farm_loads_each_checkpoint_about_once_and_stays_busy():
    scheduled = sim.simulate(sim.burst(), max_wait=MAX_WAIT)
    fcfs = sim.simulate(sim.burst(), fcfs=True)
    assert scheduled.efficiency >= 0.85 and scheduled.loads <= 2 * 4
    assert fcfs.efficiency < 0.3 and fcfs.loads > 100     # the peer: three jobs in four need a load
    assert scheduled.p("rare", 0.99) <= MAX_WAIT + L + T


def test_a_burst_that_takes_seconds_to_arrive_costs_no_more_loads():
    # 400 POSTs take a few seconds: the first decisions see lines of a job or two
    arriving = [(index / 100, checkpoint) for index, checkpoint in enumerate(sim.mix(400, ["a", "b", "c", "rare"]))]
    scheduled = sim.simulate(arriving, max_wait=MAX_WAIT)
    assert scheduled.loads <= 2 * 4 and scheduled.efficiency >= 0.85


def test_on_a_stream_rare_jobs_start_within_the_maximum_wait():
    scheduled = sim.simulate(sim.stream(), max_wait=MAX_WAIT)
    assert max(scheduled.waits["rare"]) <= MAX_WAIT + L + T
    assert scheduled.loads <= 2 * 4
    assert scheduled.efficiency > 2.5 * sim.simulate(sim.stream(), fcfs=True).efficiency


def test_one_checkpoint_costs_one_load_per_replica_as_first_come_first_served_does():
    one = [(0.0, "a")] * 400
    assert sim.simulate(one).loads == sim.simulate(one, fcfs=True).loads == 4
    assert abs(sim.simulate(one).makespan - sim.simulate(one, fcfs=True).makespan) < T
