"The networks: layers, graph convolution, layout, CRN, the generator and the discriminators."
