"""Private helpers of the refinement stage: identifier patterns and name/place gazetteers."""
