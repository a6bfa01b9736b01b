"""A fixed English passage, written for slmops, on which causal builds are compared.

Not in any training set we know of; long enough (584 SmolLM2 tokens) that perplexity
differences of a few percent between builds are signal rather than noise.
"""

from __future__ import annotations

HELD_OUT_TEXT = (
    "The river that runs through the old town was once the only road to the sea. Boats carried "
    "wool, salt and timber down to the harbour, and came back with wine, spices and news from "
    "distant cities. When the railway arrived, the boats slowly disappeared, and the warehouses "
    "along the water were turned into workshops, schools and, much later, small apartments. "
    "Today most visitors come for the market, which opens every Saturday morning in the square "
    "in front of the town hall. Farmers from the surrounding villages sell vegetables, cheese, "
    "honey and bread, and in autumn there are apples of a dozen different kinds. The town hall "
    "itself was built in the fifteenth century, burned down twice, and was rebuilt each time in "
    "a slightly different style, so that its front now looks like a short history of European "
    "architecture. A small museum on the ground floor explains how the building changed, with "
    "drawings, old photographs and a model that children are allowed to take apart.\n\n"
    "Learning a new language as an adult is slower than it is for a child, but it is far from "
    "hopeless. Adults have better memories for rules and patterns, and they can plan their "
    "practice. The most useful habit is to read and listen a little every day rather than a "
    "lot once a week. Short conversations with patient speakers help more than long lists of "
    "vocabulary, because words are remembered best when they are used to say something that "
    "matters. Mistakes are part of the process: a learner who is afraid of them speaks less, "
    "and so learns less. Many people find that after a few months they begin to understand "
    "the radio, and after a year they can follow a film without subtitles, even if they still "
    "need a dictionary for the newspaper.\n\n"
    "A good cup of tea depends on three things: fresh water, the right temperature and "
    "patience. Green tea prefers water that has cooled a little after boiling, while black tea "
    "wants it as hot as possible. Leaves should be given room to open, and they should not be "
    "left in the pot for too long, or the tea becomes bitter. Some people add milk, others "
    "lemon, and a few add nothing at all. In many countries tea is less a drink than a reason "
    "to stop working for a few minutes and talk to the people nearby. Offices, trains and "
    "kitchens all over the world fall quiet for a moment when the kettle starts to sing.\n\n"
    "The weather forecast for the coming week is mixed. Monday and Tuesday will be dry and "
    "bright, with light winds from the west and temperatures a little above the seasonal "
    "average. On Wednesday clouds will build from the south, and rain is likely by the "
    "evening, heavy at times in the hills. Thursday should be cooler, with showers and sunny "
    "spells, and the weekend looks calmer again, although fog may linger in the valleys until "
    "late morning. Drivers are asked to take care on minor roads, where fallen leaves can make "
    "the surface slippery."
)
