"""The trio actors: each a short loop that receives, calls the pure core, carries out actions."""
