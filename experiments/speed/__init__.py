"""Speed: time to 99 %, its loops and peers, and the levers behind it."""
