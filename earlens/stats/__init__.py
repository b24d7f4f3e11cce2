"""Statistics of what models emit: Zipf and Zipf–Mandelbrot laws, count-distribution power laws, partial stability and
discrete-code statistics, and multiple testing.
"""
