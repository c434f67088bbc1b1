"""Pure selection logic: strategies, voting, verdicts and answers; no I/O, no engines.

Judgments arrive through an injected `ask`. Each strategy is one module here, registered in
`bon.tournament.strategies`. May import config, errors and tasks only."""

from bon.tournament.elo import bradley_terry, round_robin
from bon.tournament.knockout import knockout
from bon.tournament.seeds import derive_seed
from bon.tournament.strategy import Strategy, Tournament
from bon.tournament.voting import Ask, Match, Vote, decide_match

__all__ = [
    "bradley_terry",
    "round_robin",
    "Ask",
    "Match",
    "Strategy",
    "Tournament",
    "Vote",
    "decide_match",
    "derive_seed",
    "knockout",
]
