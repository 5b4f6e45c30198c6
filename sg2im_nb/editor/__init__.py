"The interactive scene-graph editor and sg2im-app."
