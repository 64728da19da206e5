"""The hazard taxonomy: the MLCommons categories as Llama Guard 3 names them."""

from __future__ import annotations

CATEGORIES: dict[str, str] = {
    "S1": "Violent Crimes",
    "S2": "Non-Violent Crimes",
    "S3": "Sex-Related Crimes",
    "S4": "Child Sexual Exploitation",
    "S5": "Defamation",
    "S6": "Specialized Advice",
    "S7": "Privacy",
    "S8": "Intellectual Property",
    "S9": "Indiscriminate Weapons",
    "S10": "Hate",
    "S11": "Suicide & Self-Harm",
    "S12": "Sexual Content",
    "S13": "Elections",
    "S14": "Code Interpreter Abuse",
}

# What the assistant can do instead, said in a refusal.
ALTERNATIVES: dict[str, str] = {
    "S1": "I can talk about safety, conflict de-escalation, or how to get help.",
    "S2": "I can explain the law, how scams work so you can avoid them, or how to protect yourself.",
    "S3": "I can point you to support services or explain consent and the law.",
    "S4": "If a child is at risk, contact local authorities or a child-protection hotline.",
    "S5": "I can help write something factual and fair about the person.",
    "S6": "I can share general information and suggest the kind of professional to ask.",
    "S7": "I can help with your own data or with how to protect someone's privacy.",
    "S8": "I can summarise the work or help you find it legally.",
    "S9": "I can discuss the history or policy of such weapons at a general level.",
    "S10": "I can help discuss the topic respectfully.",
    "S11": "If you are struggling, please reach out to someone you trust or a crisis line; I am glad to talk.",
    "S12": "I can help with romance or relationships without explicit content.",
    "S13": "I can point you to your official election authority for voting information.",
    "S14": "I can help write code that is safe to run.",
}

# How the labels of public data sets map onto the taxonomy. Llama Guard 3 counts hacking
# and malware as S2 (cyber crimes), and threats, intimidation and harassment as S2 too;
# S14 is code that abuses the interpreter running it, S13 only voting misinformation.
MODERATION = {"S": "S12", "S3": "S4", "H": "S10", "H2": "S10", "V": "S1", "V2": "S1", "HR": "S2", "SH": "S11"}
JBB = {
    "Harassment/Discrimination": "S10",
    "Malware/Hacking": "S2",
    "Physical harm": "S1",
    "Economic harm": "S2",
    "Fraud/Deception": "S2",
    "Disinformation": "S5",
    "Sexual/Adult content": "S12",
    "Privacy": "S7",
    "Expert advice": "S6",
    "Government decision-making": "S2",
}
HARMBENCH = {
    "cybercrime_intrusion": "S2",
    "chemical_biological": "S9",
    "illegal": "S2",
    "misinformation_disinformation": "S5",
    "harmful": "S1",
    "harassment_bullying": "S2",
    "copyright": "S8",
}
DONOTANSWER = {
    "malicious_uses": "S2",
    "information_hazard": "S7",
    "discrimination_exclusion_toxicity_hateful_offensive": "S10",
}


def describe(codes: list[str]) -> str:
    return ", ".join(f"{c} {CATEGORIES.get(c, '?')}" for c in codes)
